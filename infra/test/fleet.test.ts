/** The DbSetupFleet construct: the state machine, its IAM and the custom resource. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Stack, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { DbSetupFleet, type DbSetupFleetProps, HANDLERS } from '../lib/db-setup-fleet';
import { actions, allStatements, cfnLint, fixtureCode, nagViolations, newApp, resources } from './util';

function fleetStack(opts: { nag?: boolean; props?: Partial<DbSetupFleetProps> } = {}) {
  const stack = new Stack(newApp({ nag: opts.nag ?? false }), 'Fleet');
  const fn = new lambda.Function(stack, 'DbSetupFn', {
    runtime: lambda.Runtime.PROVIDED_AL2023,
    handler: 'bootstrap',
    code: fixtureCode(),
  });
  Validations.of(fn).acknowledge({
    id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
    reason: 'test stand-in for the db-setup function',
  });
  const databases = ['tenant-a', 'tenant-b', 'tenant-c'].map((name) => ({
    name,
    secret: new secretsmanager.Secret(stack, `${name}Secret`),
  }));
  for (const d of databases) {
    Validations.of(d.secret).acknowledge({ id: 'AwsSolutions-SMG4', reason: 'test secrets' });
  }
  const fleet = new DbSetupFleet(stack, 'Fleet', {
    function: fn,
    databases: [{ ...databases[0], host: 'a.example', port: 5433, dbname: 'app' }, databases[1], databases[2]],
    maxConcurrency: 2,
    trigger: 'hash-1',
    ...opts.props,
  });
  return { stack, fn, fleet };
}

/**
 * The inline handlers, loaded with a scripted Step Functions client (no AWS account here):
 * `responses` answers each DescribeExecution in turn; StartExecution returns an ARN.
 */
function handlers(responses: object[]) {
  const sent: any[] = [];
  class Command {
    constructor(public input: any) {}
  }
  const sdk = {
    StartExecutionCommand: class extends Command {},
    DescribeExecutionCommand: class extends Command {},
    SFNClient: class {
      async send(cmd: any) {
        sent.push(cmd);
        if (cmd instanceof sdk.StartExecutionCommand) return { executionArn: 'arn:exec:1' };
        return responses.shift();
      }
    },
  };
  const module = { exports: {} as any };
  new Function('require', 'exports', 'process', HANDLERS)(
    () => sdk,
    module.exports,
    { env: { STATE_MACHINE_ARN: 'arn:sm' } },
  );
  return { h: module.exports, sent };
}

const ok = (name: string, applied: string[]) => ({
  name,
  status: 'SUCCESS',
  report: { applied: applied.map((n) => ({ name: n })) },
});

describe('the fleet custom resource handlers', () => {
  it('start the execution, wait while it runs, and answer SUCCESS only when every database succeeded', async () => {
    const output = JSON.stringify([ok('tenant-a', ['001_x']), ok('tenant-b', [])]);
    const { h, sent } = handlers([{ status: 'RUNNING' }, { status: 'SUCCEEDED', output }]);
    const started = await h.onEvent({ RequestType: 'Create', ResourceProperties: { Input: '{"databases":[]}' } });
    assert.equal(sent[0].input.stateMachineArn, 'arn:sm');
    assert.equal(sent[0].input.input, '{"databases":[]}');
    const event = { RequestType: 'Create', ...started };
    assert.deepEqual(await h.isComplete(event), { IsComplete: false });
    const done = await h.isComplete(event);
    assert.equal(done.IsComplete, true);
    assert.equal(done.Data.Summary, 'all 2 databases migrated. applied: tenant-a: 001_x (1 with nothing applied)');
    assert.equal(sent[1].input.executionArn, 'arn:exec:1');
  });

  it('answer FAILED naming each failed database and what was applied where', async () => {
    const cause = JSON.stringify({ errorType: 'Migration', errorMessage: 'migration 002_y failed: boom' });
    const output = JSON.stringify([
      ok('tenant-a', ['001_x', '002_y']),
      { name: 'tenant-b', status: 'FAILED', error: cause },
      { name: 'tenant-c', status: 'FAILED', error: 'Lambda.Unknown' },
    ]);
    const { h } = handlers([{ status: 'SUCCEEDED', output }]);
    await assert.rejects(
      h.isComplete({ RequestType: 'Update', Data: { ExecutionArn: 'arn:exec:1' } }),
      {
        message:
          '2 of 3 databases failed: tenant-b: migration 002_y failed: boom; tenant-c: Lambda.Unknown. ' +
          'applied: tenant-a: 001_x, 002_y (2 with nothing applied)',
      },
    );
    const aborted = handlers([{ status: 'TIMED_OUT', error: 'States.Timeout' }]).h;
    await assert.rejects(aborted.isComplete({ RequestType: 'Create', Data: { ExecutionArn: 'x' } }), /TIMED_OUT/);
  });

  it('do nothing on Delete', async () => {
    const { h, sent } = handlers([]);
    assert.deepEqual(await h.onEvent({ RequestType: 'Delete', PhysicalResourceId: 'p' }), { PhysicalResourceId: 'p' });
    assert.deepEqual(await h.isComplete({ RequestType: 'Delete' }), { IsComplete: true });
    assert.equal(sent.length, 0);
  });
});

describe('DbSetupFleet', () => {
  it('builds an Inline Map with the concurrency bound, one invoke per database, failures caught', () => {
    const { stack } = fleetStack();
    const t = Template.fromStack(stack);
    const sm = Object.values(t.findResources('AWS::StepFunctions::StateMachine')).find((r: any) =>
      JSON.stringify(r.Properties.DefinitionString).includes('Databases'),
    ) as any;
    assert.ok(sm, 'the fleet state machine');
    const text = JSON.stringify(sm.Properties.DefinitionString);
    assert.match(text, /\\"Type\\":\\"Map\\"/);
    assert.match(text, /\\"MaxConcurrency\\":2/);
    assert.match(text, /\\"ItemsPath\\":\\"\$.databases\\"/);
    assert.match(text, /\\"action\\":\\"migrate\\"/);
    assert.match(text, /\\"Catch\\":\[\{\\"ErrorEquals\\":\[\\"States.ALL\\"\],\\"ResultPath\\":\\"\$.error\\",\\"Next\\":\\"Failed\\"/);
    assert.equal(sm.Properties.LoggingConfiguration.IncludeExecutionData, false);
    const cr = Object.values(t.findResources('Custom::DbSetupFleet'))[0] as any;
    assert.equal(cr.Properties.Trigger, 'hash-1');
    assert.equal(String(cr.Properties.ServiceTimeout), '3600');
  });

  it('grants least privilege: the function reads exactly the fleet secrets; the poller describes only its executions', () => {
    const { stack } = fleetStack();
    const t = Template.fromStack(stack);
    const statements = allStatements(t.toJSON().Resources);
    const secretReads = statements.filter((s) => actions(s).includes('secretsmanager:GetSecretValue'));
    const secretResources = secretReads.flatMap(resources).sort();
    assert.equal(secretResources.length, 3);
    for (const [i, name] of ['tenanta', 'tenantb', 'tenantc'].entries()) {
      assert.match(secretResources[i], new RegExp(`^<${name}Secret[A-Z0-9]+>$`));
    }
    const describe = statements.filter((s) => actions(s).includes('states:DescribeExecution'));
    assert.equal(describe.length, 1);
    assert.match(resources(describe[0])[0], /:execution:<FleetStateMachine[A-Z0-9]+\.Name>:\*$/);
    const start = statements.filter((s) => actions(s).includes('states:StartExecution'));
    const started = start.flatMap(resources).sort();
    assert.equal(started.length, 2, 'the fleet state machine (onEvent) and the Provider waiter');
    assert.match(started[0], /^<FleetProviderwaiterstatemachine[A-Z0-9]+>$/);
    assert.match(started[1], /^<FleetStateMachine[A-Z0-9]+>$/);
    assert.ok(!statements.some((s) => resources(s).includes('*') && actions(s).some((a) => a.startsWith('secretsmanager'))));
  });

  it('is cdk-nag clean', () => {
    const { stack } = fleetStack({ nag: true });
    assert.deepEqual(nagViolations(stack), []);
  });

  it('passes cfn-lint', () => {
    const { stack } = fleetStack();
    const lint = cfnLint(stack);
    assert.equal(lint.status, 0, lint.output);
  });

  it('refuses a concurrency the Inline Map cannot run, duplicate names and an empty fleet', () => {
    assert.throws(() => fleetStack({ props: { maxConcurrency: 41 } }), /from 1 to 40/);
    assert.throws(() => fleetStack({ props: { maxConcurrency: 0 } }), /from 1 to 40/);
    assert.throws(() => fleetStack({ props: { databases: [] } }), /at least one database/);
  });
});
