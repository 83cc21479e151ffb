"""`state_dict()` in PyTorch: loads with strict=True and gives the same
outputs. Skipped where torch is not installed (CI does not install it)."""

import numpy as np
import pytest

import lstm_wgpu
from conftest import SUNSPOTS

torch = pytest.importorskip("torch", reason="torch is not installed; the PyTorch checks need it")
from torch import nn  # noqa: E402


def test_lstm_state_dict_loads_into_nn_lstm():
    ours = lstm_wgpu.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True, seed=3)
    ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()},
                        strict=True)
    x = np.random.default_rng(1).standard_normal((3, 7, 4)).astype(np.float32)
    y, (h, c) = ours.forward(x)
    with torch.no_grad():
        ty, (th, tc) = ref(torch.from_numpy(x))
    for a, b in ((y, ty), (h, th), (c, tc)):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-5, rtol=0)
    # And back: a torch module's state_dict builds the same model.
    back = lstm_wgpu.LSTM.from_state_dict(ref.state_dict(), batch_first=True)
    np.testing.assert_array_equal(back.forward(x)[0], y)


def test_model_state_dict_loads_into_readme_module(series_checkpoint):
    class LstmWgpu(nn.Module):  # the README's module
        def __init__(self, input_size, hidden_size, num_layers, outputs):
            super().__init__()
            self.lstm = nn.LSTM(input_size, hidden_size, num_layers)
            self.head = nn.Linear(hidden_size, outputs)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y[-1])

    m = lstm_wgpu.Model.load(series_checkpoint)
    c = m.config
    mod = LstmWgpu(c["input_size"], c["hidden_size"], c["num_layers"], c["outputs"])
    mod.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()},
                        strict=True)
    rows = m.csv_rows(SUNSPOTS)[:40]
    f, tg = c["normalizer"]["features"][0], c["normalizer"]["target"]
    z = ((rows - f["mean"]) / f["std"]).astype(np.float32)
    t = c["seq_len"]
    x = np.stack([z[w:w + t] for w in range(len(z) - t + 1)], axis=1)  # [T, B, F]
    with torch.no_grad():
        want = mod(torch.from_numpy(x)).double().numpy() * tg["std"] + tg["mean"]
    np.testing.assert_allclose(m.predict(rows), want, rtol=1e-5, atol=1e-5 * tg["std"])
