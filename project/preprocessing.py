"""Per-image preprocessing: small pure functions, one per step.

Pixel convention: the input pipeline delivers float32 images in [0, 255]; the model graph
maps them to the module's range with :func:`to_module_range` (TF Hub image modules take
float32 RGB in [0, 1]). Keeping the scaling in the model graph saves a pass over every
image in the input pipeline.
"""


def to_module_range(images):
    """Map [0, 255] pixels to the [0, 1] range TF Hub image modules expect."""
    return images * (1.0 / 255.0)
