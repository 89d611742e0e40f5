"""A beanstalkd provider for mqcontract, verified by mqcontract's conformance suite.

``open_beanstalkd`` is the factory registered under the ``mqcontract.providers`` entry
point as ``beanstalkd``; the harness for the suite lives in :mod:`.harness`.
"""

from __future__ import annotations

from mqcontract_beanstalkd._config import BeanstalkdConfig, load_settings
from mqcontract_beanstalkd.service import (
    BeanstalkdMessagingService,
    connect_beanstalkd,
    open_beanstalkd,
)

__version__ = "0.1.0"

__all__ = [
    "BeanstalkdConfig",
    "BeanstalkdMessagingService",
    "connect_beanstalkd",
    "load_settings",
    "open_beanstalkd",
]
