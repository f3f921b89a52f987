"""Shared test settings: hypothesis profiles with fixed seeds and no deadlines (2-core CI)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")
