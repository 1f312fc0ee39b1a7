"""OpenClaw client authentication and billing: the surface a gateway imports.

Imports only; the implementation lives in the ``openclaw_billing`` package.

    from client_auth import (
        router as client_auth_router,
        get_client_by_api_key,
        can_submit_job,
        deduct_job_credit,
    )
    app.include_router(client_auth_router)
"""

from openclaw_billing.api.bodylimit import install_body_limit
from openclaw_billing.api.deps import CurrentClient, DeferredClient, require_client
from openclaw_billing.api.errors import install_error_handlers
from openclaw_billing.api.routes import router
from openclaw_billing.errors import (
    BillingError,
    ClientInactive,
    ClientNotFound,
    CreditLimitReached,
    InvalidApiKey,
    PaymentPastDue,
)
from openclaw_billing.models import ChargeResult, ClientRecord, SubmitDecision
from openclaw_billing.service import (
    can_submit_job,
    deduct_job_credit,
    get_client_by_api_key,
    refund_job_credit,
)

__all__ = [
    "BillingError",
    "ChargeResult",
    "ClientInactive",
    "ClientNotFound",
    "ClientRecord",
    "CreditLimitReached",
    "CurrentClient",
    "DeferredClient",
    "InvalidApiKey",
    "PaymentPastDue",
    "SubmitDecision",
    "can_submit_job",
    "deduct_job_credit",
    "get_client_by_api_key",
    "install_body_limit",
    "install_error_handlers",
    "refund_job_credit",
    "require_client",
    "router",
]
