"""Draws `cargo xtask soak`'s CSV: memory, open files, pool use, throughput, p99 and errors."""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source, newline="") as handle:
        rows = list(csv.DictReader(handle))
    minutes = [int(r["seconds"]) / 60 for r in rows]

    def column(name: str) -> list[float]:
        return [float(r[name]) for r in rows]

    panels = [
        ("RSS (MiB)", [("api", column("rss_mib")), ("worker", column("worker_rss_mib"))]),
        ("open files (api)", [("fds", column("open_fds"))]),
        ("database pool (api)", [("in use", column("pool_in_use")), ("open", column("pool_open"))]),
        ("requests/s", [("served", column("requests_per_s"))]),
        ("p99 latency (ms)", [("p99", column("p99_ms"))]),
        ("errors per 10 s (non-2xx)", [("errors", column("errors"))]),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.1 * len(panels)), sharex=True)
    for axis, (title, series) in zip(axes, panels):
        for label, values in series:
            axis.plot(minutes, values, label=label, linewidth=1.4)
        axis.set_ylabel(title, fontsize=8)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        if len(series) > 1:
            axis.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("minutes")
    figure.suptitle("cargo xtask soak: Keel api on PostgreSQL, mixed load", fontsize=10)
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
