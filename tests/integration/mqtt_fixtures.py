"""MQTT fixtures; a test module imports the ones it uses explicitly::

from tests.integration.mqtt_fixtures import mqtt_url, private_mqtt_broker  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import mqtt


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """URL of a real MQTT broker for this session: ``RATEKEEPER_TEST_MQTT_URL`` or amqtt."""
    yield from mqtt.mqtt_url_for_session()


@pytest.fixture
def private_mqtt_broker() -> Iterator[mqtt.InProcessBroker]:
    """An in-process amqtt broker of this test's own, which the test may stop and restart."""
    yield from mqtt.private_broker()
