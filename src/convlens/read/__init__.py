"""Read what a network holds: its weights, its activations, and what it makes of a whole dataset.

- weights: :func:`conv_filters`, :func:`linear_templates`
- one image: :func:`activation_maps`
- one streamed pass over a dataset feeding many reducers: :func:`scan` with :class:`PooledFeatures`,
  :class:`TopK`, :class:`DeadUnits`, :class:`Histogram`, :class:`PixelCodes` (see :mod:`convlens.read.scan`)
- the last layer: :func:`neighbors` (feature vs pixel space), :func:`embed` (t-SNE / PCA / UMAP),
  :func:`grid_assignment`, :func:`trustworthiness`
- units: :func:`top_patches` (receptive-field crops), :func:`empirical_receptive_field` (Zhou et al. 2015)

Pictures of every result are in :mod:`convlens.read.render`.
"""

from .activations import ActivationMaps, activation_maps
from .dataset import Dataset, load_dataset
from .embedding import Embedding, embed, grid_assignment, pca, trustworthiness
from .neighbors import Neighbors, category_agreement, knn, neighbors
from .patches import Patch, TopPatches, crop_patches, guided_patches, top_patches
from .receptive_field import EmpiricalRF, empirical_receptive_field
from .reducers import (
                       BatchMeta,
                       DeadCount,
                       DeadUnits,
                       Features,
                       Histogram,
                       HistogramResult,
                       PixelCodes,
                       PooledFeatures,
                       Reducer,
                       TopK,
                       TopKResult,
)
from .scan import ScanResult, choose_batch_size, dead_unit_layers, feature_layer, scan
from .weights import Filters, conv_filters, linear_templates

__all__ = [
                       "ActivationMaps",
                       "BatchMeta",
                       "Dataset",
                       "DeadCount",
                       "DeadUnits",
                       "Embedding",
                       "EmpiricalRF",
                       "Features",
                       "Filters",
                       "Histogram",
                       "HistogramResult",
                       "Neighbors",
                       "Patch",
                       "PixelCodes",
                       "PooledFeatures",
                       "Reducer",
                       "ScanResult",
                       "TopK",
                       "TopKResult",
                       "TopPatches",
                       "activation_maps",
                       "category_agreement",
                       "choose_batch_size",
                       "conv_filters",
                       "crop_patches",
                       "dead_unit_layers",
                       "embed",
                       "empirical_receptive_field",
                       "feature_layer",
                       "grid_assignment",
                       "guided_patches",
                       "knn",
                       "linear_templates",
                       "load_dataset",
                       "neighbors",
                       "pca",
                       "scan",
                       "top_patches",
                       "trustworthiness",
]
