"""examples/python/decoder_layer.py against a private tandemd: decode steps
of the mixture-of-experts layer and of the dense one, the hidden state read
in place from the daemon's buffer and checked against numpy after each
step."""

import importlib.util
import os

import numpy as np

import tandem
from conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "decoder_layer", os.path.join(ROOT, "examples", "python", "decoder_layer.py"))
decoder_layer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(decoder_layer)


def check_run(client, dense):
    worst, infos = decoder_layer.run(client, steps=3, dense=dense)
    assert worst <= 1e-3
    assert infos and all(t.status == 0 and t.device < client.device_count for t in infos)


def test_moe_layer_matches_numpy(client):
    check_run(client, dense=False)


def test_dense_layer_matches_numpy(client):
    check_run(client, dense=True)


def test_the_comparison_sees_a_wrong_result():
    want = np.linspace(-1, 1, 256)
    assert decoder_layer.max_rel_error(want.astype(np.float32), want) < 1e-6
    wrong = want.copy()
    wrong[7] += 0.01
    assert decoder_layer.max_rel_error(wrong, want) > 1e-3


def test_main_exit_status(daemon, capsys):
    assert decoder_layer.main(["--socket", daemon.sock, "--steps", "2", "--dense"]) == 0
    assert "max rel error" in capsys.readouterr().out
    assert tandem.Client  # the example imports the same package
