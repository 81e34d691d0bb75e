"""Listing feature encoders: features -> tensors -> embeddings, for cold-start listings."""

from embedrec.features.pipeline import FeatureEncoder, FeaturePipeline, index_batch

__all__ = ["FeatureEncoder", "FeaturePipeline", "index_batch"]
