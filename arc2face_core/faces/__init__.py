"""Faces in photos: detection, ArcFace recognition, 68-point 3D landmarks, head pose and FFHQ alignment."""
