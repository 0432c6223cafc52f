"""The loss curve PNG written beside a checkpoint (needs matplotlib, which is optional)."""

from pathlib import Path

from charlstm.core.files import atomic_write


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_loss_curve(history: list[dict], path: str | Path) -> bool:
    """Plot train and validation loss against the optimizer step; False if matplotlib is missing."""
    if not available():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [h["train_loss"] for h in history], label="train (mean since last validation)")
    ax.plot(steps, [h["val_loss"] for h in history], label="validation (held-out tail)", marker="o", ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss, nats per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return True
