"""The CLI's mechanisms: commands found from one record each, one emitter, model options derived
from the models' config dataclasses (a new model needs no CLI edit)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowprof.cli.command import commands
from flowprof.cli.emit import Emitter, Format, OutputDir
from flowprof.cli.main import build_parser, command_parser
from flowprof.errors import ModelError, UsageError
from flowprof.models.config import POSITIVE_INT, options

ROOT = Path(__file__).resolve().parent.parent

COMMAND_NAMES = [c.name for c in commands()]


def test_commands_are_listed_in_their_order():
    assert COMMAND_NAMES == [
        "trace",
        "shape",
        "solve-conv",
        "compare",
        "sweep",
        "formula",
        "pipeline",
        "train",
        "data",
        "report",
        "models",
    ]


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_every_command_has_an_example_that_parses(name):
    command = next(c for c in commands() if c.name == name)
    assert f"example: {command.example}" in command_parser(name).format_help()
    argv = shlex.split(command.example)
    assert argv[:3] == ["python", "cli.py", name]
    args = build_parser().parse_args(argv[2:])
    assert args.command == name and args.fn is command.run


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_format_choices_come_from_the_one_vocabulary(name):
    actions = {a.dest: a for a in command_parser(name)._actions}
    if "format" in actions:
        assert set(actions["format"].choices) <= {f.value for f in Format}
        assert actions["format"].default == Format.TABLE


def test_the_emitter_runs_only_the_chosen_renderer(capsys):
    called = []

    def renderer(kind, value):
        def render():
            called.append(kind)
            return value

        return render

    Emitter("json").show(
        table=renderer("table", ["x"]), csv=renderer("csv", ["a\n"]), json=renderer("json", [1])
    )
    assert called == ["json"] and json.loads(capsys.readouterr().out) == [1]
    Emitter("csv").show(csv=renderer("csv", ["a,b\n1,2\n", "c\n3\n"]))
    assert capsys.readouterr().out == "a,b\n1,2\n\nc\n3\n"  # tables apart by a blank line
    emit = Emitter("csv")
    emit.note("wrote x")  # a note is for a person: not in CSV or JSON output
    assert capsys.readouterr().out == ""


def test_output_dir_writes_atomically_and_records(tmp_path):
    out = OutputDir(tmp_path / "new")
    out.text("a.txt", "A")
    out.json("sub/b.json", {"b": 1})
    assert out.names() == "a.txt, b.json"
    assert (tmp_path / "new" / "a.txt").read_text() == "A"
    assert json.loads((tmp_path / "new" / "sub" / "b.json").read_text()) == {"b": 1}
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.txt", "sub"]
    (tmp_path / "file").write_text("mine")
    with pytest.raises(UsageError, match="cannot create output folder"):
        OutputDir(tmp_path / "file" / "sub")


# --- model options from config dataclasses ----------------------------------------------------

# docs/design.md's transformer options, and --norm (post or pre layer norm).
TRANSFORMER_FLAGS = [
    "--emb",
    "--heads",
    "--ffn",
    "--enc-layers",
    "--dec-layers",
    "--seq-len",
    "--src-len",
    "--tgt-len",
    "--batch",
    "--vocab",
    "--norm",
]


def _model_flags(parser: argparse.ArgumentParser) -> list[str]:
    group = next(g for g in parser._action_groups if g.title == "model options")
    return [a.option_strings[0] for a in group._group_actions if a.dest != "input"]


def test_a_models_flags_are_its_configs_option_fields():
    from flowprof.models import registry
    from flowprof.models.lenet5_modern import LeNet5ModernConfig
    from flowprof.models.transformer import TransformerConfig

    assert [o.flag for o in options(TransformerConfig)] == TRANSFORMER_FLAGS
    assert [o.flag for o in options(LeNet5ModernConfig)] == ["--activation"]
    by_name = {e.name: [o.flag for o in e.options()] for e in registry.entries()}
    assert by_name["lenet5"] == by_name["lenet5-dws"] == []
    assert by_name["lenet5-modern-dws"] == ["--activation"]
    # trace, sweep and pipeline take every model's flags; sweep's --emb and --seq-len are lists
    assert _model_flags(command_parser("trace")) == TRANSFORMER_FLAGS + ["--activation"]
    assert _model_flags(command_parser("pipeline")) == TRANSFORMER_FLAGS + ["--activation"]
    swept = [f for f in TRANSFORMER_FLAGS if f not in ("--emb", "--seq-len")]
    assert _model_flags(command_parser("sweep")) == swept + ["--activation"]


def test_transformer_defaults_and_help_come_from_its_config():
    from flowprof.models.transformer import TransformerConfig

    config = TransformerConfig()
    # docs/design.md: emb 256, 8 heads, d_ff = 4 x 256 = 1024, one encoder and one decoder layer,
    # batch 1, one length for source and target
    assert (config.emb, config.heads, config.ffn) == (256, 8, 1024)
    assert (config.enc_layers, config.dec_layers, config.batch) == (1, 1, 1)
    assert config.src_len == config.tgt_len == config.seq_len
    help_ = {o.name: o.help_text() for o in options(TransformerConfig)}
    assert help_["emb"] == "embedding size d_model (default 256)"
    assert help_["heads"] == "attention heads (default 8)"


def test_option_values_reach_the_config():
    from flowprof.cli.options import model_options
    from flowprof.models import registry

    argv = "trace transformer --emb 64 --heads 4 --ffn 96 --enc-layers 2 --dec-layers 3"
    argv += " --seq-len 5 --tgt-len 7 --batch 2 --vocab 11 --norm pre"
    given = model_options(build_parser().parse_args(argv.split()))
    assert given == {
        "emb": 64,
        "heads": 4,
        "ffn": 96,
        "enc_layers": 2,
        "dec_layers": 3,
        "seq_len": 5,
        "tgt_len": 7,
        "batch": 2,
        "vocab": 11,
        "norm": "pre",
    }
    config = registry.build("transformer", **given).config
    assert (config["emb"], config["heads"], config["ffn"]) == (64, 4, 96)
    assert (config["enc_layers"], config["dec_layers"], config["batch"]) == (2, 3, 2)
    assert (config["vocab"], config["norm"]) == (11, "pre")
    assert (config["src_len"], config["tgt_len"]) == (
        5,
        7,
    )  # src: --seq-len, as --src-len is not given


def test_a_config_checks_its_option_fields():
    from flowprof.models.lenet5_modern import LeNet5ModernConfig
    from flowprof.models.transformer import TransformerConfig

    with pytest.raises(ModelError, match="heads must be a positive integer, got 0"):
        TransformerConfig(heads=0)
    with pytest.raises(ModelError, match="vocab must be a positive integer, got -1"):
        TransformerConfig(vocab=-1)
    with pytest.raises(ModelError, match="emb 100 is not divisible by heads 8"):
        TransformerConfig(emb=100)
    with pytest.raises(ModelError, match="unknown activation 'gelu'"):
        LeNet5ModernConfig(activation="gelu")
    with pytest.raises(ValueError, match="expected a positive integer, got 0"):
        POSITIVE_INT.parse("0")
    with pytest.raises(ValueError, match="expected a positive integer, got 'x'"):
        POSITIVE_INT.parse("x")


# A built-in model is two files. flowprof/models/configs/toy.py: its config (whose fields are its
# options) and its catalog entry, importing nothing heavy (every file there is imported to list
# the models and their flags).
TOY = """
from dataclasses import dataclass, field

from flowprof.models.catalog import register
from flowprof.models.config import check_options, option


@dataclass(frozen=True)
class ToyConfig:
    # 8: a width that no test input shares, so a wrong one shows
    width: int = field(default=8, metadata=option("hidden width (default {default})"))

    def __post_init__(self):
        check_options(self)


register("toy", "one linear layer", ToyConfig, "toy_model:build_toy")
"""

# flowprof/models/toy.py: its network and factory, imported when the model is built.
TOY_MODEL = """
from torch import nn

from flowprof.models.registry import BuiltModel, InputSpec
from flowprof.models.configs.toy import ToyConfig


def build_toy(input_shapes=None, **options):
    config = ToyConfig(**{k: v for k, v in options.items() if v is not None})
    return BuiltModel("toy", nn.Linear(4, config.width), (InputSpec("x", (2, 4)),), {})
"""


def test_a_new_model_gets_its_flags_and_checks_without_a_cli_edit(tmp_path):
    # The two files and no other edit: the CLI's trace takes --width, checks it and documents it,
    # `models` lists toy, and only building the model imports torch. (The declaration is found
    # as a built-in one is: its folder is searched like flowprof/models/configs/.)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "toy.py").write_text(textwrap.dedent(TOY))
    (tmp_path / "toy_model.py").write_text(textwrap.dedent(TOY_MODEL))
    runner = (
        "import atexit, os, sys; import flowprof.models.configs as c; from flowprof import cli\n"
        "c.__path__.append(os.environ['TOY_CONFIGS'])\n"
        "atexit.register(lambda: open(os.environ['TORCH_FLAG'], 'w').write(str('torch' in "
        "sys.modules)))\n"
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    flag = tmp_path / "torch-imported"

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", runner, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": f"{tmp_path}:{ROOT}",
                "COLUMNS": "200",
                "TORCH_FLAG": str(flag),
                "TOY_CONFIGS": str(tmp_path / "configs"),
            },
        )

    out = run("trace", "toy", "--width", "3", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert flag.read_text() == "True"
    # Linear(4, 3) on 2 rows: 2 * 3 dot products of length 4 = 24 MACs
    assert json.loads(out.stdout)["totals"]["macs"] == 24
    out = run("trace", "toy", "--width", "0")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "flowprof trace: argument --width: expected a positive integer, got 0 (see --help)"
    )
    assert flag.read_text() == "False"
    out = run("trace", "lenet5", "--width", "3")
    assert out.returncode == 2 and "lenet5 takes no model options; got width" in out.stderr
    out = run("trace", "--help")
    assert "--width WIDTH" in out.stdout and "toy: hidden width (default 8)" in out.stdout
    assert flag.read_text() == "False"
    out = run("models")
    assert "toy" in out.stdout and "one linear layer" in out.stdout
