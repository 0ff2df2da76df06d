"""Type aliases shared across the package (same conventions as ``blackjax.types``)."""

from blackjax.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["Array", "ArrayLike", "ArrayLikeTree", "ArrayTree", "PRNGKey"]
