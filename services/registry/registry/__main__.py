from carbon_platform.runtime import run_service
from registry.service import SERVICE

run_service(SERVICE)
