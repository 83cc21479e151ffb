"""`lstm_wgpu.Model` on checkpoints trained by the CLI: the same numbers as
`lstm-wgpu predict` / `predict --future` / `generate`."""

import csv
import io

import numpy as np
import pytest

import lstm_wgpu
from conftest import SUNSPOTS


def table(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_equals_cli(cli, series_checkpoint):
    m = lstm_wgpu.Model.load(series_checkpoint)
    rows = m.csv_rows(SUNSPOTS)
    assert rows.shape == (309, 1)
    got = m.predict(rows)
    lines = table(cli("predict", "--checkpoint", series_checkpoint, "--data", SUNSPOTS))
    want = np.array([[float(r[f"pred_SUNACTIVITY_t+{j}"]) for j in (1, 2)] for r in lines])
    # The library predicts every window (309 - 12 + 1); the CLI prints those
    # whose 2 targets are in the file, the first 309 - 12 - 2 + 1.
    assert got.shape == (298, 2) and want.shape == (296, 2)
    np.testing.assert_array_equal(got[:296], want)


def test_forecast_equals_cli_future(cli, series_checkpoint):
    m = lstm_wgpu.Model.load(series_checkpoint)
    got = m.forecast(m.csv_rows(SUNSPOTS), 5)
    lines = table(cli("predict", "--checkpoint", series_checkpoint, "--data", SUNSPOTS,
                      "--future", 5))
    want = np.array([float(r["pred_SUNACTIVITY"]) for r in lines if r["SUNACTIVITY"] == ""])
    assert got.shape == want.shape == (5,)
    np.testing.assert_array_equal(got, want)


def test_generate_equals_cli(cli, text_checkpoint):
    m = lstm_wgpu.Model.load(text_checkpoint)
    got = m.generate("The ", 40, temperature=0.8, top_k=5, seed=3)
    want = cli("generate", "--checkpoint", text_checkpoint, "--prompt", "The ", "--length", 40,
               "--temperature", 0.8, "--top-k", 5, "--seed", 3)
    assert "The " + got == want.rstrip("\n")
    assert len(got) == 40


def test_config_and_state_dict(series_checkpoint, text_checkpoint):
    s = lstm_wgpu.Model.load(series_checkpoint)
    c = s.config
    assert (c["task"], c["seq_len"], c["horizon"], c["hidden_size"], c["cell"]) == (
        "series", 12, 2, 8, "lstm")
    assert c["normalizer"]["target"]["name"] == "SUNACTIVITY"
    sd = s.state_dict()
    assert sd["lstm.weight_ih_l0"].shape == (32, 1)
    assert sd["head.weight"].shape == (2, 8) and sd["head.bias"].shape == (2,)
    assert all(v.dtype == np.float32 for v in sd.values())

    t = lstm_wgpu.Model.load(text_checkpoint)
    assert t.config["task"] == "text"
    assert "".join(t.config["vocab"]).startswith(" ") or len(t.config["vocab"]) > 1
    assert t.state_dict()["embedding.weight"].shape == (len(t.config["vocab"]), 8)


def test_step_equals_forecast_window(series_checkpoint):
    # Stepping through one window from a zero state gives that window's
    # prediction (the model reads the window from a zero state too).
    m = lstm_wgpu.Model.load(series_checkpoint)
    rows = m.csv_rows(SUNSPOTS)
    m.reset()
    for r in rows[:12]:
        y = m.step(r)
    np.testing.assert_allclose(y, m.predict(rows[:12])[0], rtol=1e-5)


def test_bad_input_raises(series_checkpoint, text_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.st"):
        lstm_wgpu.Model.load(tmp_path / "missing.st")
    (tmp_path / "junk.st").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.st"):
        lstm_wgpu.Model.load(tmp_path / "junk.st")
    m = lstm_wgpu.Model.load(series_checkpoint)
    with pytest.raises(ValueError, match="fewer than the model's seq_len 12"):
        m.predict(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="2-D"):
        m.predict(np.zeros(20))
    with pytest.raises(ValueError, match="generate needs a text model"):
        m.generate("The ", 5)
    with pytest.raises(ValueError, match="text"):
        lstm_wgpu.Model.load(text_checkpoint).predict(np.zeros((20, 1)))

    lstm = lstm_wgpu.LSTM(3, 4)
    with pytest.raises(ValueError, match="call forward first"):
        lstm.backward(np.zeros((2, 1, 4), np.float32))
    with pytest.raises(ValueError, match="input_size is 3"):
        lstm.forward(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match="3-D"):
        lstm.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="h0"):
        lstm.forward(np.zeros((2, 1, 3), np.float32), h0=np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="lengths"):
        lstm.forward(np.zeros((2, 1, 3), np.float32), lengths=np.array([3]))
    lstm.forward(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="grad_output"):
        lstm.backward(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match="unknown cell"):
        lstm_wgpu.LSTM(3, 4, cell="rnn")
    sd = lstm.state_dict()
    del sd["weight_hh_l0"]
    with pytest.raises(ValueError, match="weight_hh_l0"):
        lstm_wgpu.LSTM.from_state_dict(sd)
