"""Data files: class folders of images, TFRecord shards, the converter's manifests, cached features."""
