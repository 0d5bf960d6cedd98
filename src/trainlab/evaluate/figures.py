"""What an evaluation shows: the confusion matrix beside each class's accuracy, and a grid of the test
images the network got wrong with the most confidence."""

from __future__ import annotations

from pathlib import Path

import torch

from trainlab.atomic import write_figure


def confusion_figure(matrix: torch.Tensor, names: list[str], title: str, path: Path) -> Path:
    """Left: the confusion matrix, row = true class, column = predicted, shaded by the row's share
    (counts written in); right: each class's accuracy, matrix[c, c] / Σ_j matrix[c, j]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(names)
    size = max(4.0, 0.45 * k + 2)
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(size * 1.6, size), gridspec_kw={"width_ratios": [3, 1.2]}, constrained_layout=True
    )
    left.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:  # beyond that the numbers would not fit their cells
        for true in range(k):
            for predicted in range(k):
                count = int(counts[true, predicted])
                if count:
                    colour = "white" if shares[true, predicted] > 0.5 else "black"
                    left.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=colour)
    left.set(xticks=range(k), yticks=range(k), xlabel="predicted class", ylabel="true class", title=title)
    left.set_xticklabels(names, rotation=90 if max(map(len, names)) > 2 else 0, fontsize=8)
    left.set_yticklabels(names, fontsize=8)
    accuracy = shares.diagonal().numpy()
    right.barh(range(k), accuracy, color="tab:blue")
    for row, value in enumerate(accuracy):
        right.text(min(value, 0.98), row, f"{value:.2f}", ha="right", va="center", color="white", fontsize=7)
    right.set(xlim=(0, 1), ylim=(k - 0.5, -0.5), yticks=range(k), xlabel="accuracy", title="per class")
    right.set_yticklabels(names, fontsize=8)
    write_figure(figure, path, dpi=120)
    plt.close(figure)
    return path


def mistakes_figure(
    images: torch.Tensor,
    true: torch.Tensor,
    predicted: torch.Tensor,
    confidence: torch.Tensor,
    names: list[str],
    path: Path,
) -> Path:
    """A grid of images (N, C, H, W) as the network took them, each titled with its predicted class and
    probability over its true class. Shown on one grey scale from the lowest to the highest value among
    them: x/255 for trainlab's data, whatever range a user's DataModule gives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(images):  # to [0, 1]: imshow scales grey images by vmin, vmax but takes colour ones as they are
        images = (images - images.min()) / (images.max() - images.min()).clamp(min=1e-12)
    n = max(len(images), 1)
    columns = min(n, 8)
    rows = -(-n // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.1 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        image = images[index].permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"{names[predicted[index]]} ({confidence[index]:.2f})\ntrue: {names[true[index]]}",
            fontsize=8,
            color="tab:red",
        )
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.suptitle("Most confidently wrong: predicted (probability), true class", fontsize=9)
    figure.tight_layout()
    write_figure(figure, path, dpi=120)
    plt.close(figure)
    return path
