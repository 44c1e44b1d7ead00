"""Several independent categoricals (multi-discrete action spaces): the public
home of ``MultiCategorical`` and its ops (``heads/categorical.py``,
``heads/categorical_ops.py``), where 0.2.x users import them from."""

from .heads.categorical import MultiCategorical
from .heads.categorical_ops import PAD_WASTE_LIMIT, gumbel_noise, log_prob_at, pads_cheaply, segmented_softmax, zero_where_impossible

__all__ = ['MultiCategorical', 'PAD_WASTE_LIMIT', 'gumbel_noise', 'log_prob_at', 'pads_cheaply', 'segmented_softmax', 'zero_where_impossible']
