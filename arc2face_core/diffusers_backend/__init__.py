"""Arc2Face on diffusers without ComfyUI: the UNet, VAE and ControlNet files, the pipeline, LoRA merging, the LCM
scheduler and device/dtype choice. The datasets and the command line build on it."""
