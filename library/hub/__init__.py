"""TF1 Hub image modules: writing them, using them by TF Hub's conventions, pretrained weights."""
