"""OpenClaw client authentication and billing: the surface a gateway imports.

Imports only; the implementation lives in the ``openclaw_billing`` package.

    from client_auth import (
        router as client_auth_router,
        get_client_by_api_key,
        can_submit_job,
        deduct_job_credit,
    )
    app.include_router(client_auth_router)

Everything a host gateway needs is here (``gateway.py`` imports nothing else of the package):
the service and its settings, the errors, the models and the helpers of its own routes.
"""

from openclaw_billing.api.accesslog import redact_access_log
from openclaw_billing.api.bodylimit import BodyLimitedRoute, install_body_limit
from openclaw_billing.api.deps import (
    ClientCheck,
    CurrentClient,
    DeferredClient,
    ServiceDep,
    require_client,
    run_billing,
)
from openclaw_billing.api.docs_pages import docs_router
from openclaw_billing.api.errors import install_error_handlers
from openclaw_billing.api.routes import router
from openclaw_billing.api.schemas import ErrorPublic
from openclaw_billing.api.schemas_jobs import JobStatePublic, ReceiptPublic
from openclaw_billing.cycles import utcnow
from openclaw_billing.errors import (
    BillingError,
    ClientInactive,
    ClientNotFound,
    ConcurrencyLimitReached,
    ConfigurationError,
    Conflict,
    CreditLimitReached,
    IllegalTransition,
    InvalidApiKey,
    JobNotFound,
    NotFound,
    PaymentPastDue,
    StoreUnavailable,
)
from openclaw_billing.job_contract import cancel_queued_job, report_job_outcome, reserve_job_credit
from openclaw_billing.jobs import Charged, JobStatus, NewJob, Receipt, StoredJob
from openclaw_billing.models import ChargeResult, ClientRecord, SubmitDecision, UtcDatetime
from openclaw_billing.plans import PLANS
from openclaw_billing.quotes import QuoteId
from openclaw_billing.ratelimit import get_rate_limiter, set_rate_limiter
from openclaw_billing.safetext import MULTI_LINE, ONE_LINE, EscapeControls
from openclaw_billing.service import (
    BillingService,
    can_submit_job,
    deduct_job_credit,
    get_client_by_api_key,
    get_service,
    refund_job_credit,
    set_service,
)
from openclaw_billing.settings import get_settings
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.store.filelock import FileLock
from openclaw_billing.store.files import (
    append,
    appending,
    ends_torn,
    open_append,
    private_directory,
)
from openclaw_billing.sweeper import hold_sweeper
from openclaw_billing.web import pages_router

__all__ = [  # noqa: RUF022 (plain sorted order, as tests/test_public_surface.py pins)
    "BillingError",
    "BillingService",
    "BodyLimitedRoute",
    "ChargeResult",
    "Charged",
    "ClientCheck",
    "ClientInactive",
    "ClientNotFound",
    "ClientRecord",
    "ConcurrencyLimitReached",
    "ConfigurationError",
    "Conflict",
    "CreditLimitReached",
    "CurrentClient",
    "DeferredClient",
    "ErrorPublic",
    "EscapeControls",
    "FileLock",
    "IllegalTransition",
    "InvalidApiKey",
    "JobNotFound",
    "JobStatePublic",
    "JobStatus",
    "JobStorage",
    "MULTI_LINE",
    "NewJob",
    "NotFound",
    "ONE_LINE",
    "PLANS",
    "PaymentPastDue",
    "QuoteId",
    "Receipt",
    "ReceiptPublic",
    "ServiceDep",
    "StoreUnavailable",
    "StoredJob",
    "SubmitDecision",
    "UtcDatetime",
    "append",
    "appending",
    "can_submit_job",
    "cancel_queued_job",
    "deduct_job_credit",
    "docs_router",
    "ends_torn",
    "get_client_by_api_key",
    "get_rate_limiter",
    "get_service",
    "get_settings",
    "hold_sweeper",
    "install_body_limit",
    "install_error_handlers",
    "open_append",
    "pages_router",
    "private_directory",
    "redact_access_log",
    "refund_job_credit",
    "report_job_outcome",
    "require_client",
    "reserve_job_credit",
    "router",
    "run_billing",
    "set_rate_limiter",
    "set_service",
    "utcnow",
]
