"""Identity: the pseudo-prompt tokens, the CLIP text tower, the Arc2Face ID encoder and ArcFace embedding maths."""
