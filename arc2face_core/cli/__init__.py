"""The command line (``python -m arc2face_core``): the ``generate`` and ``dataset`` subcommands, their option groups
(pose from angles or a photo, the Reference Adapter, LCM), sample photos and the downloads tool. It sits above both
the diffusers backend and the datasets."""
