"""The config: valid values pass, anything else is refused by the project's own error, naming the field."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pythia_sweep.config import FIELDS, SweepConfig, config_from_dict, load_config
from pythia_sweep.errors import ConfigError


def test_defaults_are_the_pythia_question():
    c = SweepConfig()
    assert (c.model, c.task, c.layer) == ("EleutherAI/pythia-160m", "tasks/decimal-robust.toml", None)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"layer": -1}, "layer=-1 is not valid: an integer >= 0"),
        ({"layer": "6"}, "layer='6' is not valid: an integer >= 0"),
        ({"even_heads": [0]}, "setting='even_heads' is not valid: no longer a run setting; use a [groups] table in the task file"),
        ({"preset": "seed"}, "setting='preset' is not valid: no longer a run setting; use task ="),
        ({"null_subset": 3}, "setting='null_subset' is not valid: did you mean null_subsets?"),
        ({"task": "tasks/ioi"}, "task='tasks/ioi' is not valid: a task file (.toml), or a shipped task's name (decimal-robust"),
        ({"checkpoints": "weekly"}, "checkpoints='weekly' is not valid: one of ('seed', 'log', 'all')"),
        ({"model": "pythia"}, "a Hub repo id of the form 'org/name'"),
        ({"single_heads": 1}, "single_heads=1 is not valid: a bool"),
        ({"colour": "blue"}, "setting='colour' is not valid: a known setting"),
    ],
)
def test_bad_values_name_the_field_the_value_and_what_is_allowed(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(values)


def test_toml_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "EleutherAI/pythia-70m"\ncheckpoints = ["step1000", "step2000"]\nlayer = 3\n')
    c = load_config(path, layer=4)
    assert (c.model, c.checkpoints, c.layer) == ("EleutherAI/pythia-70m", ("step1000", "step2000"), 4)
    path.write_text("layer = [")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="an existing TOML file"):
        load_config(tmp_path / "missing.toml")


def test_sweep_id_ignores_schedule_and_resources_but_not_method_or_task_content():
    base = SweepConfig()
    same = base.replace(checkpoints="all", workers=8, batch_size=7, name="x", task="elsewhere/t.toml", offline_cache=".cache/hf/hub")
    assert base.sweep_id("t1") == same.sweep_id("t1")  # where the weights are read from changes no number
    assert base.sweep_id("t1") != base.replace(site="post-projection").sweep_id("t1")
    assert base.sweep_id("t1") != base.sweep_id("t2")  # an edited task file is a new sweep


values = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(allow_nan=True), st.text(max_size=12),
                   st.lists(st.integers(-2, 14), max_size=8), st.lists(st.text(max_size=8), max_size=4),
                   st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))  # fmt: skip
keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=10))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_config_loader_only_returns_valid_configs_or_raises_its_own_error(data):
    try:
        config = config_from_dict(data)
    except ConfigError as error:
        assert error.field and str(error).startswith(f"{error.field}=")
        return
    assert isinstance(config, SweepConfig)
    assert config_from_dict(config.to_dict()) == config  # what it accepted round-trips


def test_config_error_survives_pickling_across_processes():
    import pickle

    error = pickle.loads(pickle.dumps(ConfigError("layer", 9, "a layer index in 0..7")))
    assert (error.field, error.value, str(error)) == ("layer", 9, "layer=9 is not valid: a layer index in 0..7")


def test_offline_cache_points_hugging_face_at_it_unless_the_environment_already_does(tmp_path):
    """The demo config says where its model lives (`make sweep CONFIG=jobs/configs/demo.toml` works offline as is);
    HF_HUB_CACHE / HF_HUB_OFFLINE in the environment win, and it must run before huggingface_hub is imported."""
    import os
    import subprocess
    import sys

    code = ("import os; from pythia_sweep.config import SweepConfig; SweepConfig(offline_cache='demo-cache').use_offline_cache(); "
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['HF_HUB_CACHE'])")  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["1", str(tmp_path / "demo-cache")], done.stderr
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean | {"HF_HUB_CACHE": "/elsewhere", "HF_HUB_OFFLINE": "0"},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.stdout.split() == ["0", "/elsewhere"], done.stderr
    late = code.replace("import os;", "import os, huggingface_hub;")
    done = subprocess.run([sys.executable, "-c", late], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60)
    assert "offline_cache='demo-cache' is not valid: set before huggingface_hub is imported" in done.stderr
