"""Expression control: expression vectors, the Expression Adapter, and SMIRK with its face crop."""
