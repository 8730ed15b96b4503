"""Pose control: the ControlNet hint as it was trained; FLAME (read safely, posed by LBS), EMOCA's normal render, and a
generic whole head for users without FLAME."""
