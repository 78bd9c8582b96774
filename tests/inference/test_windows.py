"""Context windows and overlap averaging with a stand-in denoiser whose output depends only on the frame."""

import pytest
import torch

from model.windows import context_windows, denoise_windows, num_denoiser_calls


def test_windows_uniform_and_last_shifted():
    assert context_windows(10, 12, 4) == [list(range(10))]
    assert context_windows(12, 12, 4) == [list(range(12))]
    w = context_windows(80, 12, 4)
    assert [x[0] for x in w] == [0, 8, 16, 24, 32, 40, 48, 56, 64, 68]  # 64+12=76 < 80 -> extra at 68
    assert all(len(x) == 12 for x in w) and w[-1][-1] == 79
    # Official 24/4 on a length that is a whole number of windows: starts 0, 20, 40.
    assert [x[0] for x in context_windows(64, 24, 4)] == [0, 20, 40]
    with pytest.raises(ValueError):
        context_windows(10, 4, 4)


class FrameDenoiser:
    """Prediction for frame i in window position p is i*10 + p (depends on the window too, so the
    averaging is visible); counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, frames):
        self.calls += 1
        vals = torch.tensor([i * 10.0 + p for p, i in enumerate(frames)])
        return vals.view(1, 1, -1, 1, 1).expand_as(x).clone()


def test_overlap_average_exact_values():
    windows = context_windows(10, 6, 2)  # starts 0, 4 (4+6=10 ends at F exactly)
    assert [x[0] for x in windows] == [0, 4]
    den = FrameDenoiser()
    out = denoise_windows(torch.zeros(1, 4, 10, 2, 2), den, windows)
    expected = []
    for i in range(10):
        preds = [i * 10.0 + w.index(i) for w in windows if i in w]
        expected.append(sum(preds) / len(preds))
    # Frames 4, 5 are covered twice: positions (4, 0) and (5, 1) -> 40 + (4+0)/2 = 42, 50 + (5+1)/2 = 53.
    assert expected[4] == 42.0 and expected[5] == 53.0
    torch.testing.assert_close(out[0, 0, :, 0, 0], torch.tensor(expected))
    assert den.calls == len(windows)


def test_shifted_last_window_average():
    windows = context_windows(14, 6, 2)  # starts 0, 4, 8 -> 8+6=14
    windows2 = context_windows(13, 6, 2)  # starts 0, 4 then shifted 7
    assert [x[0] for x in windows2] == [0, 4, 7]
    den = FrameDenoiser()
    out = denoise_windows(torch.zeros(1, 1, 13, 1, 1), den, windows2)
    # Frame 8: windows at 4 (pos 4) and 7 (pos 1): 80 + (4 + 1)/2 = 82.5; frame 12 only in the last: 120+5.
    assert out[0, 0, 8, 0, 0].item() == 82.5 and out[0, 0, 12, 0, 0].item() == 125.0
    assert len(windows) == 3


def test_two_devices_give_the_same_result():
    windows = context_windows(30, 8, 3)
    a, b = FrameDenoiser(), FrameDenoiser()
    one = denoise_windows(torch.zeros(1, 2, 30, 2, 2), FrameDenoiser(), windows)
    two = denoise_windows(torch.zeros(1, 2, 30, 2, 2), [a, b], windows)
    torch.testing.assert_close(one, two)
    assert a.calls + b.calls == len(windows) and a.calls > 0 and b.calls > 0


@pytest.mark.parametrize("frames,ctx,ov,steps,windows", [(80, 12, 4, 3, 10), (80, 24, 4, 25, 4), (5, 12, 4, 2, 1)])
def test_denoiser_call_formula(frames, ctx, ov, steps, windows):
    assert len(context_windows(frames, ctx, ov)) == windows
    den = FrameDenoiser()
    x = torch.zeros(1, 1, frames, 1, 1)
    for _ in range(steps):
        denoise_windows(x, den, context_windows(frames, ctx, ov))
    assert den.calls == num_denoiser_calls(frames, ctx, ov, steps) == steps * windows
