"""RemotePolicy, the client of a policy server: lives in the `vla-client` distribution.

Re-exported here so `vla.runtime.client.RemotePolicy` etc. keep working; see
`vla_client/client.py` (packages/vla-client). Imports no torch.
"""

from vla_client.client import PolicyUnavailable, RemotePolicy, RemotePolicyError

__all__ = ["PolicyUnavailable", "RemotePolicy", "RemotePolicyError"]
