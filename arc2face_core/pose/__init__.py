"""Pose control: the ControlNet hint as it was trained, and normal maps rendered without EMOCA."""
