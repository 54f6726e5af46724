"""Which epoch's weights the training loop keeps: the metric first, the loss on a tie."""

from types import SimpleNamespace

from training.train import _better, _score


def test_the_first_epoch_is_the_best_so_far():
    assert _better([0.5, 1.0], None)


def test_a_higher_metric_wins_even_at_a_higher_loss():
    assert _better([0.9, 0.8], [0.8, 0.2])
    assert not _better([0.8, 0.1], [0.9, 0.8])


def test_a_tied_metric_goes_to_the_lower_loss():
    # a small validation set at its ceiling: every later epoch scores 1.0
    assert _better([1.0, 0.05], [1.0, 0.30])
    assert not _better([1.0, 0.30], [1.0, 0.05])
    assert not _better([1.0, 0.30], [1.0, 0.30])


def test_the_score_is_the_configured_metric_then_the_loss():
    metrics = SimpleNamespace(macro_f1=0.7, accuracy=0.8, nll=0.4)
    assert _score(metrics, "accuracy") == [0.8, 0.4]
    assert _score(metrics, "macro_f1") == [0.7, 0.4]
