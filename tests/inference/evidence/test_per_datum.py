"""Per-datum ELBO and IWAE bounds against a conjugate local-latent model's closed forms.

The model: ``z_i ~ N(0, 1)``, ``x_i | z_i ~ N(z_i, s^2)`` in the plate ``data``, so
``log p(x_i) = log N(x_i; 0, 1 + s^2)`` and ``p(z_i | x_i) = N(m_i, sd^2)`` with
``m_i = x_i / (1 + s^2)``, ``sd = s / sqrt(1 + s^2)``. The guides are
``q(z_i | x_i) = N(m_i + shift * sd, (ratio * sd)^2)``: with shift 0 and ratio 1 the log
weight is ``log p(x_i)`` whatever the draw; otherwise, with ``u = (z - m_i) / sd``,

    KL(q || p(z | x_i)) = -log(ratio) + (ratio^2 + shift^2 - 1) / 2,

and the importance weight ``W = p(z | x_i) / q(z)`` (mean 1) has
``E_q[W^2] = ratio / sqrt(2a) * exp(shift^2 / (2 ratio^2) + shift^2 / (4 a ratio^4))`` with
``a = 1 - 1 / (2 ratio^2)``, the same for every datum (tolerances below use it).
Statistical checks are at 5 standard errors (a false failure ~6e-7 per comparison).
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.evidence.per_datum import PerDatumBounds, per_datum_bounds

S = 0.7  # likelihood sd
POST_SD = S / math.sqrt(1 + S**2)
F64 = torch.float64


def simulate(n: int, seed: int = 0, shape=()) -> torch.Tensor:
    """``n`` data points from the model's marginal N(0, 1 + s^2), float64."""
    generator = torch.Generator().manual_seed(seed)
    return math.sqrt(1 + S**2) * torch.randn((n, *shape), generator=generator, dtype=F64)


def exact_log_evidence(x: torch.Tensor) -> np.ndarray:
    """log p(x_i), summed over any event dims: shape (N,)."""
    marginal_sd = torch.tensor(1 + S**2, dtype=F64).sqrt()
    logp = torch.distributions.Normal(torch.zeros((), dtype=F64), marginal_sd).log_prob(x)
    return logp.reshape(len(x), -1).sum(-1).numpy()


def model(x, subsample_size=None):
    with pyro.plate("data", len(x), subsample_size=subsample_size) as index:
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x[index])


def make_guide(shift: float = 0.0, ratio: float = 1.0):
    """q(z_i | x_i) = N(m_i + shift sd, (ratio sd)^2); (0, 1) is the exact posterior."""

    def guide(x, subsample_size=None):
        with pyro.plate("data", len(x), subsample_size=subsample_size) as index:
            loc = x[index] / (1 + S**2) + shift * POST_SD
            pyro.sample("z", dist.Normal(loc, ratio * POST_SD))

    return guide


def kl_to_posterior(shift: float, ratio: float) -> float:
    return -math.log(ratio) + (ratio**2 + shift**2 - 1) / 2


def log_weight_variance(shift: float, ratio: float) -> float:
    """Var_q(log p(z | x) - log q(z)): with z = m + sd (shift + ratio e), e ~ N(0, 1), the
    log weight is log(ratio) - (shift + ratio e)^2 / 2 + e^2 / 2."""
    return (ratio**2 - 1) ** 2 / 2 + (shift * ratio) ** 2


def weight_variance(shift: float, ratio: float) -> float:
    """Var_q(p(z | x) / q(z)): finite for ratio^2 > 1/2."""
    a = 1 - 1 / (2 * ratio**2)
    exponent = shift**2 / (2 * ratio**2) + shift**2 / (4 * a * ratio**4)
    return ratio / math.sqrt(2 * a) * math.exp(exponent) - 1


def bounds(m, guide, x, **kwargs) -> PerDatumBounds:
    kwargs.setdefault("dtype", F64)
    return per_datum_bounds(m, guide, x, **kwargs)


# ---------------------------------------------------------------- the exact guide


@pytest.mark.parametrize("k", [1, 7, 1000])
def test_exact_guide_gives_the_exact_evidence_per_datum(k):
    x = simulate(40)
    result = bounds(model, make_guide(), x, num_samples=k)
    expected = exact_log_evidence(x)
    assert result.elbo.shape == result.iwae.shape == result.elbo_mcse.shape == (40,)
    assert result.num_samples == k
    np.testing.assert_allclose(result.elbo, expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.iwae, expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.gap, 0.0, rtol=0, atol=1e-8)
    if k == 1:
        assert np.isnan(result.elbo_mcse).all()
    else:
        np.testing.assert_allclose(result.elbo_mcse, 0.0, rtol=0, atol=1e-8)


def test_a_subsampled_plate_is_not_scaled_by_n_over_batch():
    """With subsample_size 5 of 40 the model's sites carry the scale 8; each datum's
    bound must not. Chunks of 5 match the plate's subsample size."""
    x = simulate(40)
    result = bounds(
        model, make_guide(), x, num_samples=50, chunk_size=5, model_kwargs={"subsample_size": 5}
    )
    np.testing.assert_allclose(result.elbo, exact_log_evidence(x), rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.iwae, exact_log_evidence(x), rtol=0, atol=1e-8)


def test_a_subsampled_plate_works_with_the_default_chunks():
    """The plate's subsample size (5) sets the chunks; 42 points leave a short last chunk."""
    x = simulate(42)
    result = bounds(model, make_guide(), x, num_samples=50, model_kwargs={"subsample_size": 5})
    np.testing.assert_allclose(result.elbo, exact_log_evidence(x), rtol=0, atol=1e-8)


# ---------------------------------------------------------------- inexact guides


@pytest.mark.parametrize(("shift", "ratio"), [(0.0, 1.5), (1.0, 1.0), (1.0, 1.5), (-0.5, 0.8)])
def test_elbo_of_an_inexact_guide_is_log_evidence_minus_kl(shift, ratio):
    x = simulate(50, seed=1)
    result = bounds(model, make_guide(shift, ratio), x, num_samples=1000, seed=3)
    kl = kl_to_posterior(shift, ratio)
    # The guide is visibly off: KL is many MCSEs (sd(w) / sqrt(1000) <= 0.06 here).
    assert kl > 0.15
    assert (result.elbo_mcse > 0).all()
    target = exact_log_evidence(x) - kl
    assert (np.abs(result.elbo - target) < 5 * result.elbo_mcse).all()
    # The MCSE itself: sd(w) is the same closed form for every datum. w is at worst a
    # scaled chi-square(1) (kurtosis 15): a sample sd of 1000 draws is within ~6% of it.
    expected_mcse = math.sqrt(log_weight_variance(shift, ratio) / 1000)
    np.testing.assert_allclose(result.elbo_mcse, expected_mcse, rtol=0.3)
    # Jensen, draw by draw: the IWAE bound is never below the ELBO of the same draws.
    assert (result.iwae >= result.elbo).all()
    np.testing.assert_array_equal(result.gap, result.iwae - result.elbo)


@pytest.mark.parametrize(("shift", "ratio"), [(0.0, 1.5), (1.0, 1.0), (1.0, 1.5)])
def test_iwae_of_an_inexact_guide_is_within_monte_carlo_error_of_log_evidence(shift, ratio):
    """IWAE_i - log p(x_i) = log(mean of k weights W of mean 1): within
    log(1 ± 5 sd(W) / sqrt(k)) of 0. Only guides at least as wide as the posterior: a
    narrower one has weights with a tail too heavy for a normal approximation at 5 sd."""
    k = 1000
    x = simulate(50, seed=1)
    result = bounds(model, make_guide(shift, ratio), x, num_samples=k, seed=3)
    log_evidence = exact_log_evidence(x)
    kl = kl_to_posterior(shift, ratio)
    half_width = 5 * math.sqrt(weight_variance(shift, ratio) / k)
    assert -math.log1p(-half_width) < kl  # the band is tighter than the ELBO's gap
    assert (result.iwae >= result.elbo).all()
    assert (result.iwae <= log_evidence + math.log1p(half_width)).all()
    assert (result.iwae >= log_evidence + math.log1p(-half_width)).all()


def test_iwae_mean_over_data_increases_with_k():
    """E[IWAE_k] - log p ~ -Var(W) / 2k for large k (Burda et al. 2016). With shift 2 and
    ratio 1.5, Var(W) = 2.77: from k = 100 to 1000 the mean over N = 5000 data rises by
    ~0.0125 while it is uncertain by sd(W) / sqrt(k N) = 0.0024 at k = 100 (5 sds); the
    earlier steps are further apart (KL 2.2 → 0.14 → 0.014)."""
    shift, ratio, n = 2.0, 1.5, 5000
    x = simulate(n, seed=2)
    log_evidence = exact_log_evidence(x)
    guide = make_guide(shift, ratio)
    var_w = weight_variance(shift, ratio)
    means = {}
    for k in (1, 10, 100, 1000):
        result = bounds(model, guide, x, num_samples=k, seed=0)
        if k == 1:
            np.testing.assert_array_equal(result.iwae, result.elbo)
            assert np.isnan(result.elbo_mcse).all()
        excess = result.iwae - log_evidence
        means[k] = excess.mean()
        if k >= 100:  # the large-k expansion holds; the mean is within 5 standard errors
            standard_error = excess.std(ddof=1) / math.sqrt(n)
            assert abs(means[k] + var_w / (2 * k)) < 5 * standard_error
    assert means[1] < means[10] < means[100] < means[1000]
    # k = 1: the ELBO, mean log p - KL, its standard error from Var(w) in closed form.
    standard_error = math.sqrt(log_weight_variance(shift, ratio) / n)
    assert abs(means[1] + kl_to_posterior(shift, ratio)) < 5 * standard_error


def test_seed_fixes_the_draws_and_leaves_the_callers_rng_alone():
    x = simulate(20, seed=4)
    guide = make_guide(0.5, 1.5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = bounds(model, guide, x, num_samples=50, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = bounds(model, guide, x, num_samples=50, seed=7)
    c = bounds(model, guide, x, num_samples=50, seed=8)
    np.testing.assert_array_equal(a.elbo, b.elbo)
    np.testing.assert_array_equal(a.iwae, b.iwae)
    assert not np.array_equal(a.elbo, c.elbo)


# ---------------------------------------------------------------- chunks


@pytest.mark.parametrize("chunk_size", [1, 7, 40, 1000])
def test_chunks_give_the_exact_answer_for_the_exact_guide(chunk_size):
    x = simulate(40, seed=5)
    whole = bounds(model, make_guide(), x, num_samples=30)
    chunked = bounds(model, make_guide(), x, num_samples=30, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked.elbo, whole.elbo, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chunked.iwae, whole.iwae, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chunked.elbo, exact_log_evidence(x), rtol=0, atol=1e-8)


@pytest.mark.parametrize("chunk_size", [1, 7])
def test_chunks_agree_within_monte_carlo_error_for_an_inexact_guide(chunk_size):
    """Per datum, so a chunk that shuffled the data (x_i vary by ~1.2) would fail."""
    x = simulate(40, seed=6)
    guide = make_guide(1.0, 1.5)
    whole = bounds(model, guide, x, num_samples=400)
    chunked = bounds(model, guide, x, num_samples=400, chunk_size=chunk_size)
    se = np.sqrt(whole.elbo_mcse**2 + chunked.elbo_mcse**2)
    assert (np.abs(chunked.elbo - whole.elbo) < 5 * se).all()
    kl = kl_to_posterior(1.0, 1.5)
    assert (np.abs(chunked.elbo - (exact_log_evidence(x) - kl)) < 5 * chunked.elbo_mcse).all()
    # IWAE_400 sits within 5 sd(W) / sqrt(k) of log p (bias ~ Var(W) / 2k, smaller still).
    slack = 5 * math.sqrt(weight_variance(1.0, 1.5) / 400)
    assert (np.abs(chunked.iwae - exact_log_evidence(x)) < slack).all()


# ---------------------------------------------------------------- other model shapes


def vector_model(x):
    with pyro.plate("data", len(x)) as index:
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, S).to_event(1), obs=x[index])


def vector_guide(x):
    with pyro.plate("data", len(x)) as index:
        pyro.sample("z", dist.Normal(x[index] / (1 + S**2), POST_SD).to_event(1))


def test_vector_latent_gives_one_number_per_datum():
    x = simulate(30, seed=7, shape=(2,))
    result = bounds(vector_model, vector_guide, x, num_samples=100)
    expected = exact_log_evidence(x)  # both coordinates summed
    assert result.elbo.shape == result.iwae.shape == (30,)
    np.testing.assert_allclose(result.elbo, expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.iwae, expected, rtol=0, atol=1e-8)


D = 5  # pixels per datum in the nested model


def nested_model(x):
    """z_i ~ N(0, 1); u_ij | z_i ~ N(z_i, 1); x_ij | u_ij ~ N(u_ij, s^2), j in a nested plate."""
    with pyro.plate("data", len(x), dim=-2) as index:
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("pixels", D, dim=-1):
            u = pyro.sample("u", dist.Normal(z, 1.0))
            pyro.sample("x", dist.Normal(u, S), obs=x[index])


def nested_guide(x):
    """The exact posterior p(z_i | x_i) p(u_ij | z_i, x_ij)."""
    with pyro.plate("data", len(x), dim=-2) as index:
        xi = x[index]
        precision = 1 + D / (1 + S**2)
        loc = (xi.sum(-1, keepdim=True) / (1 + S**2)) / precision
        z = pyro.sample("z", dist.Normal(loc, precision**-0.5))
        with pyro.plate("pixels", D, dim=-1):
            u_precision = 1 + 1 / S**2
            u_loc = (z + xi / S**2) / u_precision
            pyro.sample("u", dist.Normal(u_loc, u_precision**-0.5))


def test_nested_plate_sums_each_datum_over_its_pixels():
    n = 25
    generator = torch.Generator().manual_seed(8)
    z = torch.randn(n, 1, generator=generator, dtype=F64)
    x = z + math.sqrt(1 + S**2) * torch.randn(n, D, generator=generator, dtype=F64)
    cov = (1 + S**2) * torch.eye(D, dtype=F64) + torch.ones(D, D, dtype=F64)
    expected = torch.distributions.MultivariateNormal(torch.zeros(D, dtype=F64), cov).log_prob(x)
    result = bounds(nested_model, nested_guide, x, num_samples=200)
    assert result.elbo.shape == result.iwae.shape == (n,)
    np.testing.assert_allclose(result.elbo, expected.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.iwae, expected.numpy(), rtol=0, atol=1e-8)
    # The chunks cut the data plate, not the pixels.
    chunked = bounds(nested_model, nested_guide, x, num_samples=200, chunk_size=4)
    np.testing.assert_allclose(chunked.elbo, expected.numpy(), rtol=0, atol=1e-8)


# ---------------------------------------------------------------- errors


def global_model(x):
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, S), obs=x)


def global_guide(x):
    pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))


def test_a_global_latent_is_refused():
    with pytest.raises(ValueError, match=r"mu.*outside plate 'data'"):
        bounds(global_model, global_guide, simulate(10), num_samples=5)


def test_an_unknown_plate_is_refused_listing_the_plates():
    with pytest.raises(ValueError, match=r"no plate 'images'; its plates: data, pixels"):
        bounds(nested_model, nested_guide, simulate(5, shape=(D,)), plate="images", num_samples=5)
    with pytest.raises(ValueError, match=r"its plates: none"):
        bounds(lambda x: None, lambda x: None, simulate(5), num_samples=5)


@pytest.mark.parametrize("num_samples", [0, -1, 2.5, True])
def test_bad_num_samples_is_refused(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        bounds(model, make_guide(), simulate(5), num_samples=num_samples)


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_bad_chunk_size_is_refused(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        bounds(model, make_guide(), simulate(5), num_samples=5, chunk_size=chunk_size)
