"""The boundary between the scheduler and running gangs, owned by the scheduler.

:mod:`scheduler.gangs.backend` is the Backend protocol a backend implements (launch, poll,
cancel, preempt) and the fate it reports (:class:`GangPhase`, :class:`GangStatus`);
:mod:`scheduler.gangs.protocol` is what travels between the service, a backend and the ranks
(the job file, the launch request, progress events, exit codes). ``workers/`` implements and
uses them; the scheduler never imports ``workers/``.
"""
