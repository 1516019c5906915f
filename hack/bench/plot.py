"""Draws objects Ready over time for every run of `make bench` (target/bench/bench.json -> ready.png)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source) as f:
        report = json.load(f)
    runs = report["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        times = run["readyTimeline"]
        ax.step([0.0] + times, range(len(times) + 1), where="post", label="operator")
        floor = max(run["floorDatabricksSeconds"], run["floorKubernetesSeconds"])
        ax.axvline(floor, color="grey", linestyle="--", label=f"floor {floor:.1f}s")
        ax.axvline(2 * floor, color="red", linestyle=":", label="2x floor")
        ax.set_title(f"{run['name']}: {run['secondsToReady']:.1f}s ({run['ratioToFloor']:.2f}x)", fontsize=9)
        ax.set_xlabel("seconds after the first apply")
        ax.set_ylabel("objects Ready")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"databricks-oauth-operator: objects Ready over time ({report['machine']['cpus']} CPUs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"written: {target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
