"""Where results are tracked: MLflow, written by the sweep's driver only (workers return records).

Layout in the store: one experiment per model and layer; a parent run per sweep (the config as params,
`sweep_id` as a tag) whose metrics are logged with `step=` the training step, so the UI charts strength
against training; a child run per checkpoint (revision, step, commit and weight hashes; every rate,
interval and log-prob difference as metrics; the full record as an artifact). A checkpoint is recorded at
most once with status ok: recording is idempotent, which makes retried work and resumed sweeps safe.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from pythia_sweep.config import SweepConfig, config_from_dict
from pythia_sweep.errors import PythiaSweepError

# One bar per downloaded file is noise when a report reads hundreds of small records; ours counts records.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
DEFAULT_STORE = "mlruns/mlflow.db"
PARENT_METRICS = ("strength", "logprob_strength", "baseline/", "clean/", "even/", "odd/", "all/", "upstream/", "null/success_q")


class TrackingStoreError(PythiaSweepError):
    """The tracking store cannot be used; raised before any checkpoint runs."""


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the project's SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def experiment_name(model: str, layer: int) -> str:
    return f"{model}/layer{layer}"


class Tracker:
    def __init__(self, uri: str | None = None):
        self.uri = uri or default_tracking_uri()
        if not self.uri.startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql", "databricks", "file:")):
            raise TrackingStoreError(
                f"MLFLOW_TRACKING_URI={self.uri!r} is not a tracking URI: use sqlite:///path/to/mlflow.db or "
                "http://host:port of a tracking server"
            )
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if self.uri.startswith(("http://", "https://")):
            self._check_server()
        self._experiments: dict[str, str] = {}  # parent run id -> experiment id
        try:  # open (or create) the store now: a broken one is refused before any checkpoint runs
            self.client = MlflowClient(tracking_uri=self.uri)
            self.client.search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001 - corrupt, locked, unwritable: one clear message
            raise TrackingStoreError(f"tracking store {self.uri} cannot be used: {type(error).__name__}: {error}") from error

    def _check_server(self) -> None:
        """Ask a tracking server for its health at once, instead of retrying for minutes mid-sweep."""
        try:
            urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=5)
        except (OSError, ValueError) as error:
            raise TrackingStoreError(f"tracking server {self.uri} cannot be reached: {error}") from error

    def artifact_root(self) -> str | None:
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, under mlruns/
            return Path(self.uri.removeprefix("sqlite:///")).parent.joinpath("artifacts").resolve().as_uri()
        return None  # a tracking server decides

    def experiment_id(self, name: str) -> str:
        try:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                return found.experiment_id
            # The experiment kind tag opens the UI on its model-training view (runs, charts, compare).
            return self.client.create_experiment(
                name, artifact_location=self.artifact_root(), tags={"mlflow.experimentKind": "custom_model_development"}
            )
        except Exception as error:  # noqa: BLE001 - any store failure is reported the same clear way
            raise TrackingStoreError(f"tracking store {self.uri} cannot be used: {type(error).__name__}: {error}") from error

    # -- sweeps -------------------------------------------------------------------------------------------
    def start_sweep(self, config: SweepConfig) -> str:
        """The parent run of this config's sweep: the existing one (resumed) or a new one."""
        exp = self.experiment_id(experiment_name(config.model, config.layer))
        run_id = self.existing_sweep(config)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "resumed_at", time.strftime("%Y-%m-%d %H:%M:%S"))
            return run_id
        run = self.client.create_run(
            exp,
            run_name=config.label,
            tags={"kind": "sweep", "sweep_id": config.sweep_id, "model": config.model, "layer": str(config.layer)},
        )
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in config.to_dict().items()]
        self.client.log_batch(run.info.run_id, params=params)
        self.client.log_dict(run.info.run_id, config.to_dict(), "config.json")
        return run.info.run_id

    def existing_sweep(self, config: SweepConfig) -> str | None:
        """The parent run of an earlier sweep with the same settings (same `sweep_id`), if any."""
        exp = self.experiment_id(experiment_name(config.model, config.layer))
        runs = self.client.search_runs(
            [exp], filter_string=f"tags.sweep_id = '{config.sweep_id}' and tags.kind = 'sweep'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        return runs[0].info.run_id if runs else None

    def finish_sweep(self, parent: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(parent, status=status)

    def _experiment_of(self, parent: str) -> str:
        if parent not in self._experiments:
            self._experiments[parent] = self.client.get_run(parent).info.experiment_id
        return self._experiments[parent]

    def checkpoint_runs(self, parent: str) -> list:
        """Child runs of a sweep (all statuses), newest first."""
        return self.client.search_runs(
            [self._experiment_of(parent)], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            order_by=["attributes.start_time DESC"], max_results=5000,
        )  # fmt: skip

    def recorded_ok(self, parent: str) -> set[str]:
        return {r.data.tags["revision"] for r in self.checkpoint_runs(parent) if r.data.tags.get("checkpoint_status") == "ok"}

    # -- checkpoints --------------------------------------------------------------------------------------
    def record_checkpoint(self, parent: str, record: dict, metrics: dict[str, float]) -> str | None:
        """Log one checkpoint's record as a child run; returns its id, or None if already recorded ok.

        A previous failed result for the same revision is deleted when the new one lands, so each
        checkpoint has exactly one result in the sweep.
        """
        revision = record["revision"]
        siblings = self.checkpoint_runs(parent)  # one listing serves the idempotency and duplicate checks
        previous = [r for r in siblings if r.data.tags.get("revision") == revision]
        if any(r.data.tags.get("checkpoint_status") == "ok" for r in previous):
            return None
        tags = {
            "mlflow.parentRunId": parent,
            "kind": "checkpoint",
            "revision": revision,
            "step": str(record["step"]),
            "checkpoint_status": record["status"],
            "commit": record.get("commit") or "",
            "weights_digest": record.get("weights_digest") or "",
            "sweep_id": record["sweep_id"],
        }
        if record.get("error"):
            tags["error"] = record["error"][:5000]
        twins = sorted(
            r.data.tags["revision"] for r in siblings
            if record.get("weights_digest") and r.data.tags.get("weights_digest") == record["weights_digest"]
            and r.data.tags.get("revision") != revision
        )  # fmt: skip
        if twins:  # identical weight files: a public checkpoint served under two names
            tags["duplicate_of"] = ",".join(twins)
            record["duplicate_of"] = twins
        run = self.client.create_run(self._experiment_of(parent), run_name=revision, tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param("revision", revision), Param("step", str(record["step"])), Param("commit", record.get("commit") or "")]
        params += [Param(f"sha256/{name}", digest) for name, digest in record.get("weight_sha256", {}).items()]
        items = list(metrics.items())
        for start in range(0, max(len(items), 1), 900):  # log_batch takes at most 1000 metrics
            self.client.log_batch(
                run_id, params=params if start == 0 else [],
                metrics=[Metric(k, v, now, record["step"] or 0) for k, v in items[start : start + 900]],
            )  # fmt: skip
        self.client.log_dict(run_id, record, "record.json")
        if record.get("responses"):
            lines = [f"{r['condition']:>14}  {r['prompt_id']:<22} {'FIXED' if r['success'] else '     '}  {r['response']!r}" for r in record["responses"]]
            self.client.log_text(run_id, "\n".join(lines) + "\n", "responses.txt")
        if record["step"] is not None:
            parent_metrics = [
                Metric(k, v, now, record["step"]) for k, v in metrics.items() if k.startswith(PARENT_METRICS)
            ]
            for start in range(0, len(parent_metrics), 900):
                self.client.log_batch(parent, metrics=parent_metrics[start : start + 900])
        self.client.set_terminated(run_id, status="FINISHED" if record["status"] == "ok" else "FAILED")
        for old in previous:
            self.client.delete_run(old.info.run_id)
        return run_id

    # -- reading back ---------------------------------------------------------------------------------
    def find_sweep(self, sweep: str | None = None) -> str:
        """A sweep's parent run id: by run id, by run name, or (None) the most recent sweep."""
        if sweep:
            try:
                run = self.client.get_run(sweep)
                return run.info.run_id
            except Exception:  # noqa: BLE001 - not a run id: try it as a name
                pass
        exps = [e.experiment_id for e in self.client.search_experiments()]
        filt = "tags.kind = 'sweep'" + (f" and attributes.run_name = '{sweep}'" if sweep else "")
        runs = self.client.search_runs(exps, filter_string=filt, order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise TrackingStoreError(f"no sweep {'named ' + repr(sweep) + ' ' if sweep else ''}in tracking store {self.uri}")
        return runs[0].info.run_id

    def sweep_config(self, parent: str) -> SweepConfig:
        path = self.client.download_artifacts(parent, "config.json")
        return config_from_dict(json.loads(Path(path).read_text()))

    def load_records(self, parent: str) -> list[dict]:
        """Every checkpoint record of a sweep (one per revision), ordered by training step."""
        records = {}
        for run in tqdm(self.checkpoint_runs(parent), desc="reading records", unit="run", leave=False):
            revision = run.data.tags.get("revision")
            if revision in records:
                continue
            path = self.client.download_artifacts(run.info.run_id, "record.json")
            records[revision] = json.loads(Path(path).read_text())
        return sorted(records.values(), key=lambda r: (r["step"] is None, r["step"] or 0))

    def log_report(self, parent: str, folder: str | Path) -> None:
        self.client.log_artifacts(parent, str(folder), "report")

    def log_summary(self, parent: str, metrics: dict[str, float | None], verdict: str) -> None:
        """Sweep-level results on the parent run, so the UI's compare view lines sweeps up side by side."""
        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and v == v]
        self.client.log_batch(parent, metrics=values)
        self.client.set_tag(parent, "verdict", verdict[:5000])
