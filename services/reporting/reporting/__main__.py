from carbon_platform.runtime import run_service
from reporting.service import SERVICE

run_service(SERVICE)
