"""Trainer configuration: YAML + overrides + algorithm defaults, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mopd_eval.cli import main
from mopd_eval.errors import InputError
from training.config import TrainConfig, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_defaults_algo_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: sdpo\nlearning_rate: 1e-5\nmax_steps: 7\ntask_kwargs: {per_level: 3, levels: [1]}\n")
    cfg = load_config(f, ["max_steps=2", "task_kwargs.per_level=5", "condition=mopd-s"], algo="mopd")
    assert cfg.algo == "mopd"  # --algo wins over the file
    assert cfg.teacher == "ema"  # the algorithm's default
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)  # YAML reads 1e-5 as a string
    assert cfg.max_steps == 2
    assert cfg.task_kwargs == {"per_level": 5, "levels": [1]}
    assert cfg.resolve_condition().successes == 2 and cfg.resolve_condition().failures == 0


@pytest.mark.parametrize("algo,teacher,condition", [("grpo", "none", "base"), ("opd", "external", "base"),
                                                    ("sdpo", "ema", "sdpo"), ("mopd", "ema", "2s1f"),
                                                    ("mopd-s", "ema", "mopd-s")])
def test_algorithm_defaults(algo, teacher, condition):
    extra = ["teacher_model_name_or_path=somewhere"] if algo == "opd" else []
    cfg = load_config(None, extra, algo=algo)
    assert (cfg.teacher, cfg.condition) == (teacher, condition)
    sdpo = cfg.resolve_condition()
    if algo == "sdpo":
        assert sdpo.successes == 1 and sdpo.feedback and sdpo.require == "any"


def test_shipped_configs_load():
    for f in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(f)
        assert cfg.model_name_or_path == "smollm2-135m" and cfg.task == "arith", f


@pytest.mark.parametrize("overrides,field", [
    (["nope=1"], "nope"),
    (["beta=1.5"], "beta"),
    (["alpha=0.5"], "alpha"),
    (["scale_rewards=true"], "scale_rewards"),
    (["report_to=mlflow"], "report_to"),
    (["save_dtype=int8"], "save_dtype"),
    (["teacher=none"], "teacher"),
    (["condition=unknown"], "condition"),
    (["distill_variant=sampled"], "beta"),
    (["max_steps=0"], "max_steps"),
    (["learning_rate=fast"], "learning_rate"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(InputError) as e:
        load_config(None, overrides, algo="mopd")
    assert e.value.field == field


def test_external_teacher_needs_a_path_and_grpo_needs_groups():
    with pytest.raises(InputError, match="teacher_model_name_or_path"):
        load_config(None, [], algo="opd")
    with pytest.raises(InputError, match="at least 2"):
        load_config(None, ["num_generations=1"], algo="grpo")


def test_sampled_variant_with_reverse_kl_is_accepted():
    assert load_config(None, ["distill_variant=sampled", "beta=1"], algo="sdpo").beta == 1.0


def test_beta_follows_trl_per_trainer_kind():
    # GRPOConfig.beta (KL coefficient, default 0) and GKDConfig.beta (mixing weight, default 0.5)
    assert load_config(None, [], algo="grpo").beta == 0.0
    assert load_config(None, [], algo="mopd").beta == 0.5
    assert load_config(None, ["beta=0.04"], algo="grpo").beta == 0.04
    assert load_config(None, ["beta=3"], algo="grpo").beta == 3.0  # a KL coefficient may exceed 1
    with pytest.raises(InputError, match="mixing weight"):
        load_config(None, ["beta=3"], algo="mopd")
    with pytest.raises(InputError, match=">= 0"):
        load_config(None, ["beta=-1"], algo="grpo")


def test_old_names_are_refused_naming_the_new_one(tmp_path):
    f = tmp_path / "old.yaml"
    f.write_text("algo: mopd\nalpha: 1.0\n")
    with pytest.raises(InputError) as e:
        load_config(f)
    assert e.value.field == "alpha" and "renamed to beta" in str(e.value) and str(f) in str(e.value)
    for old, new in (("true", "'group'"), ("false", "'none'")):
        with pytest.raises(InputError, match=new):
            load_config(None, [f"scale_rewards={old}"], algo="grpo")


@pytest.mark.parametrize("value,expected", [("none", []), ("wandb", ["wandb"]), ("all", ["tensorboard", "wandb"]),
                                            ("[wandb, tensorboard]", ["wandb", "tensorboard"])])
def test_report_to_names(value, expected):
    assert load_config(None, [f"report_to={value}"], algo="grpo").reporters() == expected


def test_override_parsing():
    assert parse_overrides(["a=1", "b.c=x", "d=true", "e=[1, 2]", "f="]) == {
        "a": 1, "b": {"c": "x"}, "d": True, "e": [1, 2], "f": None}
    with pytest.raises(InputError):
        parse_overrides(["novalue"])


def test_config_file_errors_name_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("max_steps: [unclosed\n")
    with pytest.raises(InputError) as e:
        load_config(f)
    assert str(f) in str(e.value)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_bad_config_with_exit_2(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("algo: mopd\nbogus_key: 1\n")
    assert main(["train", "--config", str(f)]) == 2
    assert "bogus_key" in capsys.readouterr().err


def test_dataclass_round_trip():
    cfg = TrainConfig(algo="grpo", teacher="none", condition="base")
    assert TrainConfig(**cfg.to_dict()) == cfg


def test_vllm_data_parallelism_is_refused_for_training():
    with pytest.raises(InputError, match="torchrun"):
        load_config(None, ["engine=vllm", "data_parallel_size=2"], algo="grpo")
