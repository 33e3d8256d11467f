"""Text frontend stage: normalization, segmentation, G2P (see engine/)."""
