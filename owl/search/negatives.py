"""Negative queries: "like this, not like that".

The rule (docs/search.md): a box is dropped for a query when it is closer to some negative query
than to that query, closeness being the cosine between the box's class embedding and the query
embedding. For one box both cosines meet the same shift and scale, and the scale is positive
(elu + 1), so "closer to the negative" is exactly "a higher logit for the negative": the rule is
applied to the class head's logits. A box that survives keeps its score unchanged (the score
`owl detect` gives it), so negatives only ever remove results; ties (equally close) keep the box.

This goes beyond the OWL anchors, which have no negatives; SAM 3's negative exemplars play the
same role. A negative can be text, an exemplar box or a saved embedding, like any query.
"""

from __future__ import annotations

import numpy as np

from owl.models.owl_vit import QUERY_MASK_VALUE


def suppress_negatives(logits: np.ndarray, negative_logits: np.ndarray) -> np.ndarray:
    """Applies the rule: logits [B, Q] with every (box, query) pair closer to a negative masked.

    Args:
      logits: [B, Q] class logits of the boxes for the (positive) queries.
      negative_logits: [B, N] logits of the same boxes for the negative queries (N may be 0).
    Returns:
      A copy of `logits` where pairs with max_n negative_logits[b, n] > logits[b, q] are set to
      the class head's padding value (-1e6: score 0, below any threshold).
    """
    logits = np.array(logits, np.float32, copy=True)
    if negative_logits.shape[1] == 0:
        return logits
    closest_negative = negative_logits.max(axis=1, keepdims=True)
    logits[closest_negative > logits] = QUERY_MASK_VALUE
    return logits
