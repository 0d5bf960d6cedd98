"""What a run records (docs/records.md): its provenance, its tags, the config tree it prints, TensorBoard
beside MLflow (read back with TensorBoard's own reader), the git-ignored `local` group, and the mistakes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, TINY, TRAIN, cli_env, mlflow_runs, write_mnist
from trainlab.run.config_tree import config_tree
from trainlab.tracking.provenance import Provenance, Record

DOCS = REPO / "docs" / "records.md"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny run with MLflow and TensorBoard, diagnostics on and two tags (shared: each test reads it)."""
    root = tmp_path_factory.mktemp("recorded")
    write_mnist(root / "data")
    cmd = [
        sys.executable, str(TRAIN), f"paths.root_dir={root}", *TINY, "data.batch_size=50",
        "logger=[mlflow,tensorboard]", "diagnostics=on", "diagnostics.every_n_steps=1",
        "+tags.study=vanishing", "+tags.owners=[ana,bo]",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def the_run(root: Path):
    (run,) = mlflow_runs(root)
    return run


def test_a_run_records_the_commit_the_dirty_state_versions_device_and_host(recorded):
    root, _ = recorded
    run = the_run(root)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    tags, params = run.data.tags, run.data.params
    assert tags["git.commit"] == tags["mlflow.source.git.commit"] == head.strip()
    assert tags["git.dirty"] == str(bool(dirty.strip())).lower()
    import lightning
    import torch

    assert params["env.torch"] == torch.__version__ and params["env.lightning"] == lightning.__version__
    assert params["env.cuda"] == str(torch.version.cuda or "none")
    assert {"device.cpu", "device.gpu", "device.gpu_driver", "host"} <= set(tags)


def test_a_run_keeps_the_installed_packages_and_a_dirty_trees_diff_as_artifacts(recorded):
    from mlflow.tracking import MlflowClient

    root, _ = recorded
    run = the_run(root)
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    files = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "provenance")}
    assert "requirements.txt" in files
    assert ("git_diff.patch" in files) == (run.data.tags["git.dirty"] == "true")
    (folder,) = root.glob("outputs/*/*/provenance")
    packages = (folder / "requirements.txt").read_text().splitlines()
    assert "torch==" + run.data.params["env.torch"].split("+")[0] in packages  # a local tag (+cu130) aside


def test_tags_become_mlflow_tags_and_not_params(recorded):
    run = the_run(recorded[0])
    assert run.data.tags["study"] == "vanishing" and run.data.tags["owners"] == "ana, bo"
    assert not any(key.startswith("tags.") for key in run.data.params)


def test_the_run_prints_its_composed_config_as_a_short_tree(recorded):
    _, result = recorded
    output = result.stdout + result.stderr
    assert "├─ optimizer: sgd  name=sgd lr=0.1" in output
    assert "└─ task_name=train seed=0" in output
    assert "paths" not in output.split("config\n", 1)[1].split("└─", 1)[0]


def test_config_tree_gives_each_group_one_line_with_its_option():
    tree = config_tree(
        {"seed": 1, "model": {"name": "mlp", "hidden": [3]}, "paths": {"x": 1}}, {"model": "mlp"}
    )
    assert tree.splitlines() == ["config", "├─ model: mlp  name=mlp hidden=[3]", "└─ seed=1"]


def test_tensorboard_gets_scalars_and_each_layers_histograms_over_time(recorded):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder,) = recorded[0].glob("outputs/*/*/tensorboard")
    events = EventAccumulator(str(folder), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    assert {"val/acc", "train/loss", "grad_norm/layer1"} <= set(events.Tags()["scalars"])
    histograms = set(events.Tags()["histograms"])
    assert {"activation/layer1", "gradient/layer1", "gradient/layer5"} <= histograms
    # 180 training images in batches of 50: steps 0-3, each sampled (every_n_steps=1).
    steps = [event.step for event in events.Histograms("gradient/layer1")]
    assert steps == [0, 1, 2, 3]
    first = events.Histograms("activation/layer1")[0].histogram_value
    assert first.num == 50 * 100  # a batch of 50 through 100 ReLU units


def test_provenance_says_git_and_gpu_are_absent_instead_of_failing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git, no nvidia-smi here
    record = Provenance().collect()
    assert record.tags["git.commit"] == "unknown (git not installed)"
    assert record.tags["device.gpu"] == "none (nvidia-smi not installed)"
    assert "git.dirty" not in record.tags and "torch==" in record.files["requirements.txt"]


def test_the_gpus_and_their_driver_come_from_nvidia_smi(monkeypatch, tmp_path):
    """No GPU here: a stand-in `nvidia-smi` prints what the real one prints for this query."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 565.57.01'\necho 'NVIDIA H200, 565.57.01'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    tags = Provenance().collect().tags
    assert tags["device.gpu"] == "NVIDIA H200; NVIDIA H200" and tags["device.gpu_driver"] == "565.57.01"


def test_a_resumed_runs_record_goes_beside_the_first_ones(tmp_path):
    first = Record(tags={"host": "a"}, files={"requirements.txt": "torch==1\n"})
    assert first.write(tmp_path / "provenance") == tmp_path / "provenance"
    second = Record(tags={"host": "b"})
    assert second.write(tmp_path / "provenance") == tmp_path / "provenance" / "resume_1"
    assert json.loads((tmp_path / "provenance" / "provenance.json").read_text())["tags"] == {"host": "a"}
    assert json.loads((tmp_path / "provenance" / "resume_1" / "provenance.json").read_text())["tags"] == {
        "host": "b"
    }


def test_provenance_outside_a_repository_says_so(tmp_path):
    record = Provenance(tmp_path).collect()
    assert record.tags["git.commit"] == f"unknown (not a git repository: {tmp_path})"


def test_a_dirty_tree_is_marked_and_its_diff_kept(tmp_path):
    def git(*args: str) -> None:
        identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run(["git", *identity, *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "model.py").write_text("depth = 4\n")
    git("add", "model.py")
    git("commit", "-qm", "first")
    (tmp_path / "model.py").write_text("depth = 8\n")
    (tmp_path / "notes.txt").write_text("new\n")
    record = Provenance(tmp_path).collect()
    assert record.tags["git.dirty"] == "true"
    patch = record.files["git_diff.patch"]
    assert "# untracked: notes.txt" in patch and "-depth = 4\n+depth = 8" in patch


def test_the_slurm_job_and_the_container_image_are_recorded_where_there_are_some(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("TRAINLAB_IMAGE", "ghcr.io/lab/trainlab:1.2")
    tags = Provenance().collect().tags
    assert tags["slurm.job_id"] == "4242" and tags["container.image"] == "ghcr.io/lab/trainlab:1.2"
    assert "container.runtime" not in tags and "container.digest" not in tags
    # What a job of launcher.container finds in its environment (trainlab.cluster.container sets it).
    monkeypatch.setenv("TRAINLAB_CONTAINER_RUNTIME", "podman")
    monkeypatch.setenv("TRAINLAB_IMAGE_DIGEST", "sha256:" + "ab" * 32)
    tags = Provenance().collect().tags
    assert tags["container.runtime"] == "podman" and tags["container.digest"] == "sha256:" + "ab" * 32
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert Provenance().collect().tags["slurm.job_id"] == "4240_2"


def cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("--")]
    rest = [a for a in args if not a.startswith("--")]
    cmd = [sys.executable, str(TRAIN), *flags, f"paths.root_dir={root}", *rest]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=root, timeout=120)


def test_the_local_group_is_read_when_present_and_git_ignored(tmp_path):
    local = tmp_path / "conf" / "local"
    local.mkdir(parents=True)
    (local / "default.yaml").write_text("# @package _global_\nlogger:\n  experiment_name: on-this-machine\n")
    shown = cli(f"--config-dir={tmp_path / 'conf'}", "--cfg=job", "--package=logger", root=tmp_path)
    assert OmegaConf.create(shown.stdout).experiment_name == "on-this-machine"
    assert OmegaConf.create(cli("--cfg=job", "--package=logger", root=tmp_path).stdout).experiment_name == (
        "trainlab"
    )
    ignored = subprocess.run(["git", "check-ignore", "-q", "conf/local/default.yaml"], cwd=REPO)
    assert ignored.returncode == 0
    shipped = subprocess.run(["git", "check-ignore", "-q", "conf/local/example.yaml"], cwd=REPO)
    assert shipped.returncode == 1


def test_a_logger_in_the_list_that_trainlab_cannot_run_is_a_one_line_error(tmp_path):
    """A user's own conf/logger/wandb.yaml composes; trainlab has no logger of that name to run."""
    (tmp_path / "conf" / "logger").mkdir(parents=True)
    (tmp_path / "conf" / "logger" / "wandb.yaml").write_text("# @package logger.wandb\nproject: mine\n")
    result = cli(f"--config-dir={tmp_path / 'conf'}", "logger=[mlflow,wandb]", root=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: logger=['mlflow', 'wandb']: must be one of mlflow, csv, none at most, and any of tensorboard"
    )
    assert mlflow_runs(tmp_path) == []


def test_tensorboard_not_installed_is_a_one_line_error(monkeypatch, tmp_path):
    """Installed here (the dev extra): its absence is a stand-in (find_spec finds nothing)."""
    import importlib.util

    from trainlab.errors import UserError
    from trainlab.tracking.tracker import check_tensorboard

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        UserError, match=r"^logger=\[…,tensorboard\] needs the tensorboard package: pip install"
    ):
        check_tensorboard(OmegaConf.create({"save_dir": str(tmp_path)}))


def documented_mistakes() -> list[tuple[str, str]]:
    """(the command, its one-line error) as docs/records.md shows each mistake."""
    text = DOCS.read_text()
    return re.findall(r"\$ python src/train.py (.+)\nerror: (.+)", text)


@pytest.mark.parametrize(("command", "error"), documented_mistakes())
def test_each_documented_mistake_exits_2_with_its_one_line_and_leaves_no_run(command, error, tmp_path):
    (tmp_path / "a_file").write_text("")
    args = [a.replace("$ROOT", str(tmp_path)) for a in _split(command)]
    result = cli(*args, root=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: " + error.replace("$ROOT", str(tmp_path))
    assert mlflow_runs(tmp_path) == []


def _split(command: str) -> list[str]:
    import shlex

    return shlex.split(command, comments=True)


def documented_commands() -> list[str]:
    text = DOCS.read_text()
    return [c for c in re.findall(r"^python src/train.py (.+)$", text, flags=re.M) if "-m" not in c.split()]


@pytest.mark.parametrize("command", documented_commands())
def test_each_documented_command_composes_and_validates(command, tmp_path):
    """Composed as the CLI composes it (Hydra's runtime values set: the output folder is tmp_path)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from trainlab.config import validate

    overrides = [o for o in _split(command) if not o.startswith("-")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose(
                "train", overrides=[*overrides, f"paths.root_dir={tmp_path}"], return_hydra_config=True
            )
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        validate(cfg, build=False)
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def test_each_member_of_a_population_records_the_provenance_and_the_tags(run_cli, mnist_root, tmp_path):
    run_cli(
        "-m", *TINY, "hparams_search=lr", "optimizer.lr=choice(0.05, 0.1)",
        "hydra/sweeper/sampler=brute_force",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.population=2", "+tags.study=vanishing",
        "logger=[mlflow,tensorboard]",
    )  # fmt: skip
    members = [r for r in mlflow_runs(tmp_path) if "population.member" in r.data.tags]
    assert len(members) == 2
    for run in members:
        assert run.data.tags["study"] == "vanishing" and "git.commit" in run.data.tags
        assert "env.torch" in run.data.params
    logs = "".join(path.read_text() for path in tmp_path.glob("multirun/*/*/*.log"))
    assert "a population job writes no TensorBoard files" in logs
