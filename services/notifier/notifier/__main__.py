from carbon_platform.runtime import run_service
from notifier.service import SERVICE

run_service(SERVICE)
