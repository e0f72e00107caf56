"""Deployment runtime: the inference Policy, policy server/client, robots, control loop, chunking, safety.

policy.py     Policy: checkpoint -> infer(obs) (torch; the only module here that imports it)
wire.py       msgpack-numpy, openpi's layout (numpy + msgpack only)
server.py     PolicyServer / `vla serve`: websocket, openpi wire protocol, API key, limits
client.py     RemotePolicy: Policy's interface over the wire (numpy, msgpack, websockets only)
robot.py      Robot interface, SimRobotClient, user drivers named in launch files
sim_robot.py  `vla sim-robot`: a MuJoCo env stepped in real time, served over TCP
chunking.py   sync / async / rtc chunk execution, online delay estimate
safety.py     limits, NaN rejection, holds; every intervention counted
control.py    ControlLoop: fixed-rate ticks on absolute deadlines (workers.py: its threads)
timing.py     per-tick timing log, summary, histogram PNG
recorder.py   the run as episodes in an EpisodeStore
launch.py     launch/<name>.toml -> LaunchConfig
run.py        run_deployment / `vla run`
"""
