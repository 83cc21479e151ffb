"""`lstm_wgpu.LSTM` against the committed PyTorch fixtures (outputs and
gradients of nn.LSTM / nn.GRU, tests/fixtures/make_*fixtures.py)."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors import safe_open

import lstm_wgpu
from conftest import FIXTURES

# proj_* fixtures are nn.LSTM(proj_size=P), which the engine does not have.
NAMES = sorted(
    str(p.relative_to(FIXTURES)).removesuffix(".weights.safetensors")
    for p in [*FIXTURES.glob("*.weights.safetensors"), *FIXTURES.glob("cells/*.weights.safetensors")]
    if not p.name.startswith("proj_")
)


def close(got, want, what):
    # 1e-4 of the tensor's largest value (and at least 1e-4 absolute).
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol:.3g}"


def test_fixture_list_is_not_empty():
    assert len(NAMES) >= 10, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_match_pytorch(name):
    weights = load_file(FIXTURES / f"{name}.weights.safetensors")
    inputs = load_file(FIXTURES / f"{name}.inputs.safetensors")
    expected = load_file(FIXTURES / f"{name}.expected.safetensors")
    with safe_open(FIXTURES / f"{name}.expected.safetensors", "np") as f:
        cfg = json.loads(f.metadata()["config"])
    cell = cfg.get("cell", "lstm")
    m = lstm_wgpu.LSTM.from_state_dict(weights, batch_first=cfg["batch_first"], cell=cell)
    assert (m.input_size, m.hidden_size, m.num_layers, m.bidirectional, m.bias) == (
        cfg["input_size"], cfg["hidden_size"], cfg["num_layers"], cfg["bidirectional"], cfg["bias"])

    out = m.forward(inputs["input"], h0=inputs.get("h0"), c0=inputs.get("c0"),
                    lengths=inputs.get("lengths"))
    if cell == "lstm":
        y, (h_n, c_n) = out
        close(c_n, expected["c_n"], "c_n")
    else:
        y, h_n = out
    close(y, expected["output"], "output")
    close(h_n, expected["h_n"], "h_n")

    g = m.backward(inputs["grad_output"], grad_h_n=inputs["grad_h_n"],
                   grad_c_n=inputs.get("grad_c_n"))
    want = {k.removeprefix("grad."): v for k, v in expected.items() if k.startswith("grad.")}
    assert sorted(g) == sorted(want)
    for k, v in want.items():
        close(g[k], v, f"grad {k}")


def test_state_dict_round_trip_and_seeded_init():
    a = lstm_wgpu.LSTM(3, 5, num_layers=2, bidirectional=True, seed=7)
    sd = a.state_dict()
    assert sorted(sd) == sorted(
        f"{w}_{k}_l{l}{s}" for w in ("weight", "bias") for k in ("ih", "hh")
        for l in (0, 1) for s in ("", "_reverse"))
    assert sd["weight_ih_l1"].shape == (20, 10)
    bound = 1 / np.sqrt(5)
    assert all(np.abs(v).max() <= bound for v in sd.values())
    b = lstm_wgpu.LSTM.from_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    ya, _ = a.forward(x)
    yb, _ = b.forward(x)
    np.testing.assert_array_equal(ya, yb)
    # Another seed, other weights.
    c = lstm_wgpu.LSTM(3, 5, num_layers=2, bidirectional=True, seed=8)
    assert not np.array_equal(c.state_dict()["weight_hh_l0"], sd["weight_hh_l0"])
