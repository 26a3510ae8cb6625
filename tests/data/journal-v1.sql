-- A journal as schema version 1 wrote it (reactor 0.1.0): one event, one run with a step, a throttle slot.
-- tests/ops/test_journal.py opens a copy to check that every migration keeps what version 1 recorded.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    vm TEXT NOT NULL,
    host TEXT,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    problems TEXT
);
INSERT INTO "events" VALUES(1,'STOP','vm1',NULL,100.0,'{}',NULL);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    broker TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    vm TEXT NOT NULL,
    event_id INTEGER,
    event_name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    error TEXT
);
INSERT INTO "runs" VALUES(1,'r1','vm1',1,'STOP','started','ok',100.0,100.5,NULL);
CREATE TABLE steps (
    run_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    args TEXT,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    started REAL NOT NULL,
    duration REAL NOT NULL
);
INSERT INTO "steps" VALUES(1,0,'log','{"message":"x"}','ok','null',NULL,100.0,0.001);
CREATE TABLE throttle (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    ts REAL NOT NULL
);
INSERT INTO "throttle" VALUES('r1','vm1',100.0);
CREATE INDEX runs_vm ON runs (vm, id);
CREATE INDEX runs_rule ON runs (rule, id);
CREATE INDEX runs_live ON runs (status) WHERE status IN ('running', 'queued');
CREATE INDEX steps_run ON steps (run_id, idx);
CREATE INDEX throttle_ts ON throttle (ts);
CREATE INDEX outbox_broker ON outbox (broker, id);
PRAGMA user_version = 1;
