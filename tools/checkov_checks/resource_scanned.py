"""An inventory check that passes for every Bicep resource, so that the report shows which files
checkov really parsed: it skips a file it cannot parse without saying so (tools/check_infra.py)."""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class ResourceScanned(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Resource was parsed and scanned (inventory)",
            id="CKV_TCDR_1",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_resources=("*",),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        return CheckResult.PASSED


check = ResourceScanned()
