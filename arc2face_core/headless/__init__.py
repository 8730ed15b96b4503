"""Arc2Face without ComfyUI: model files, the diffusers-based pipeline, the pose ControlNet and the command line."""
