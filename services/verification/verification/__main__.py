from carbon_platform.runtime import run_service
from verification.service import SERVICE

run_service(SERVICE)
