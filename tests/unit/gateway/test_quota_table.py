"""The quota table (quotas.py) is the one place a quota is declared: each names a real setting and gets its limit."""
from __future__ import annotations

from services.gateway.quotas import BY_FIELD, Quotas
from services.gateway.settings import GatewaySettings, QuotaSettings
from shared.settings import env_names


def test_every_quota_names_a_setting_the_gateway_reads():
    names = env_names(GatewaySettings)
    for q in BY_FIELD.values():
        assert q.env in names, q


def test_every_quota_gets_its_limit_from_its_setting():
    s = QuotaSettings(**{q.attr: 1000 + i for i, q in enumerate(BY_FIELD.values()) if q.attr})
    quotas = Quotas(s, unfinished_jobs=7)
    for i, q in enumerate(BY_FIELD.values()):
        assert quotas.limits[q.field] == (1000 + i if q.attr else 7), q
    assert set(quotas.limits) == set(BY_FIELD)
