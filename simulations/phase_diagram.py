"""Placeholder main job (replaced by the full Monte Carlo phase diagram)."""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import sdtheory as sd


def main():
    k, n, c, d, lam = 4, 100, 0.4, 0.1, 1e-4
    etas = np.linspace(0, 0.8, 41)
    rounds = np.arange(16)
    classes = sd.block_classes([n] * k)
    rng = np.random.default_rng(0)
    acc = np.zeros((etas.size, rounds.size))
    for i, eta in enumerate(etas):
        flip = rng.random(classes.size) < eta
        noisy = np.where(flip, (classes + rng.integers(1, k, classes.size)) % k, classes)
        out = sd.block_outputs(np.eye(k)[noisy], classes, c, d, lam, rounds)
        acc[i] = (np.asarray(out).argmax(-1) == classes).mean(-1)
    out_dir = "results/phase_diagram"
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots()
    im = ax.imshow(acc.T, origin="lower", aspect="auto", extent=[0, 0.8, -0.5, 15.5])
    ax.set_xlabel("noise rate eta")
    ax.set_ylabel("round")
    fig.colorbar(im, label="training accuracy")
    fig.savefig(os.path.join(out_dir, "phase_diagram.png"), dpi=120)
    print("wrote", out_dir, file=sys.stderr)


if __name__ == "__main__":
    main()
