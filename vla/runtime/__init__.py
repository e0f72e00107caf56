"""Deployment runtime: the inference Policy, policy server/client, control loop, safety."""
