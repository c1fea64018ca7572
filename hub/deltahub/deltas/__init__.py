"""Weight deltas: task vectors (dense or low-rank) and the pure math behind them."""
