import { ArnFormat, type CfnElement, CustomResource, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';

/** One database of a fleet: its label, its admin secret, and optionally where to connect. */
export interface FleetDatabase {
  /** A label for reports (a tenant or a Region); letters, digits, `-`, `_`, `.`. */
  readonly name: string;
  /** Its admin secret (RDS format); the function may read exactly these. */
  readonly secret: secretsmanager.ISecret;
  /** @default the secret's `host` */
  readonly host?: string;
  /** @default the secret's `port` */
  readonly port?: number;
  /** @default the secret's `dbname` */
  readonly dbname?: string;
}

/** Properties of {@link DbSetupFleet}. */
export interface DbSetupFleetProps {
  /** The db-setup function (e.g. `DbSetup.function`); it must reach every database's network. */
  readonly function: lambda.IFunction;
  /** The databases, each migrated by one invoke of the function. */
  readonly databases: FleetDatabase[];
  /** How many databases at once (Inline Map: at most 40). @default 4 */
  readonly maxConcurrency?: number;
  /** Changes of this value (e.g. the migrations hash) rerun the fleet on Update. @default none */
  readonly trigger?: string;
  /** How long the whole fleet may take (the Provider's totalTimeout), at most 55 minutes. @default 50 minutes */
  readonly totalTimeout?: Duration;
  /** How often the execution is polled. @default 30 seconds */
  readonly queryInterval?: Duration;
  /** @default one month */
  readonly logRetention?: logs.RetentionDays;
}

/** The Inline Map's concurrency limit (Step Functions). */
export const MAX_INLINE_CONCURRENCY = 40;

/** The Provider framework's two handlers: start the execution, then poll it (docs/scale.md). */
export const HANDLERS = `
const { SFNClient, StartExecutionCommand, DescribeExecutionCommand } = require('@aws-sdk/client-sfn');
const sfn = new SFNClient({});
exports.onEvent = async (event) => {
  const id = event.PhysicalResourceId || 'db-setup-fleet';
  if (event.RequestType === 'Delete') return { PhysicalResourceId: id };
  const out = await sfn.send(new StartExecutionCommand({
    stateMachineArn: process.env.STATE_MACHINE_ARN,
    input: event.ResourceProperties.Input,
  }));
  return { PhysicalResourceId: id, Data: { ExecutionArn: out.executionArn } };
};
exports.summarize = (results) => {
  const failed = results.filter((r) => r.status !== 'SUCCESS');
  const applied = results
    .map((r) => ({ name: r.name, names: ((r.report && r.report.applied) || []).map((a) => a.name) }))
    .filter((r) => r.names.length > 0)
    .map((r) => r.name + ': ' + r.names.join(', '));
  // The same wording as db_setup::fleet::FleetReport::summary (the local fan-out).
  const where = applied.length
    ? 'applied: ' + applied.join('; ') + ' (' + (results.length - applied.length) + ' with nothing applied)'
    : 'nothing applied anywhere';
  if (failed.length === 0) return { ok: true, text: 'all ' + results.length + ' databases migrated. ' + where };
  const errors = failed.map((f) => {
    let msg = f.error || 'failed';
    try { msg = JSON.parse(msg).errorMessage || msg; } catch (e) { /* not JSON */ }
    return f.name + ': ' + String(msg).slice(0, 300);
  });
  return { ok: false, text: failed.length + ' of ' + results.length + ' databases failed: ' + errors.join('; ') + '. ' + where };
};
exports.isComplete = async (event) => {
  if (event.RequestType === 'Delete') return { IsComplete: true };
  const d = await sfn.send(new DescribeExecutionCommand({ executionArn: event.Data.ExecutionArn }));
  if (d.status === 'RUNNING' || d.status === 'PENDING_REDRIVE') return { IsComplete: false };
  if (d.status !== 'SUCCEEDED') throw new Error('fleet execution ' + d.status + ': ' + (d.error || '') + ' ' + String(d.cause || '').slice(0, 500));
  const results = JSON.parse(d.output);
  const s = exports.summarize(results);
  if (!s.ok) throw new Error(s.text.slice(0, 3500));
  return { IsComplete: true, Data: { Databases: String(results.length), Summary: s.text.slice(0, 3000) } };
};
`;

/**
 * Migrates a fleet of databases in one deploy: a Step Functions state machine whose Inline
 * Map invokes the db-setup function once per database (`{"action": "migrate", "database":
 * {...}}`) with at most `maxConcurrency` at a time, catching each failure as that database's
 * result; a Provider-framework custom resource starts the execution and polls it
 * (isComplete), answering SUCCESS only when every database succeeded, FAILED naming each
 * failed database and what was applied where. See docs/scale.md for the limits.
 */
export class DbSetupFleet extends Construct {
  /** The state machine. */
  public readonly stateMachine: sfn.StateMachine;
  /** The custom resource. */
  public readonly resource: CustomResource;

  constructor(scope: Construct, id: string, props: DbSetupFleetProps) {
    super(scope, id);
    const maxConcurrency = props.maxConcurrency ?? 4;
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1 || maxConcurrency > MAX_INLINE_CONCURRENCY) {
      throw new Error(`maxConcurrency must be an integer from 1 to ${MAX_INLINE_CONCURRENCY} (Inline Map)`);
    }
    if (props.databases.length === 0) throw new Error('a fleet needs at least one database');
    const names = new Set<string>();
    for (const d of props.databases) {
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(d.name)) {
        throw new Error(`database name "${d.name}": use 1 to 128 letters, digits, ".", "-", "_"`);
      }
      if (names.has(d.name)) throw new Error(`database name "${d.name}" appears twice`);
      names.add(d.name);
    }
    const totalTimeout = props.totalTimeout ?? Duration.minutes(50);
    if (totalTimeout.toSeconds() > 55 * 60) {
      throw new Error('totalTimeout must stay under the custom resource ServiceTimeout (at most 55 minutes)');
    }
    const retention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;

    // One iteration: invoke the function; a failure becomes that database's result.
    const invoke = new tasks.LambdaInvoke(this, 'Migrate', {
      lambdaFunction: props.function,
      payload: sfn.TaskInput.fromObject({
        action: 'migrate',
        database: sfn.JsonPath.objectAt('$.database'),
      }),
      resultSelector: {
        'name.$': '$.Payload.database',
        status: 'SUCCESS',
        'report.$': '$.Payload',
      },
      retryOnServiceExceptions: true,
    });
    const failed = new sfn.Pass(this, 'Failed', {
      parameters: {
        'name.$': '$.database.name',
        status: 'FAILED',
        'error.$': '$.error.Cause',
      },
    });
    invoke.addCatch(failed, { resultPath: '$.error' });
    const map = new sfn.Map(this, 'Databases', {
      maxConcurrency,
      itemsPath: '$.databases',
      itemSelector: { 'database.$': '$$.Map.Item.Value' },
    });
    map.itemProcessor(invoke);

    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(map),
      timeout: totalTimeout,
      tracingEnabled: true,
      logs: {
        destination: new logs.LogGroup(this, 'StateMachineLogs', { retention }),
        level: sfn.LogLevel.ALL,
        // The input names hosts and secret ARNs: keep execution data out of the log.
        includeExecutionData: false,
      },
    });
    for (const d of props.databases) d.secret.grantRead(props.function);

    const input = JSON.stringify({
      databases: props.databases.map((d) => ({
        name: d.name,
        secretId: d.secret.secretArn,
        ...(d.host !== undefined && { host: d.host }),
        ...(d.port !== undefined && { port: d.port }),
        ...(d.dbname !== undefined && { dbname: d.dbname }),
      })),
    });
    const handler = (name: string, entry: string) =>
      new lambda.Function(this, name, {
        runtime: lambda.determineLatestNodeRuntime(this),
        handler: `index.${entry}`,
        code: lambda.Code.fromInline(HANDLERS),
        timeout: Duration.minutes(1),
        environment: { STATE_MACHINE_ARN: this.stateMachine.stateMachineArn },
        logGroup: new logs.LogGroup(this, `${name}Logs`, { retention }),
      });
    const onEvent = handler('Start', 'onEvent');
    const isComplete = handler('Poll', 'isComplete');
    this.stateMachine.grantStartExecution(onEvent);
    const stack = Stack.of(this);
    isComplete.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['states:DescribeExecution'],
        resources: [
          stack.formatArn({
            service: 'states',
            resource: 'execution',
            resourceName: `${this.stateMachine.stateMachineName}:*`,
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );
    const provider = new cr.Provider(this, 'Provider', {
      onEventHandler: onEvent,
      isCompleteHandler: isComplete,
      queryInterval: props.queryInterval ?? Duration.seconds(30),
      totalTimeout,
      logGroup: new logs.LogGroup(this, 'ProviderLogs', { retention }),
    });
    this.resource = new CustomResource(this, 'Resource', {
      serviceToken: provider.serviceToken,
      resourceType: 'Custom::DbSetupFleet',
      serviceTimeout: Duration.hours(1),
      properties: { Input: input, ...(props.trigger !== undefined && { Trigger: props.trigger }) },
    });
    this.acknowledge(provider, [onEvent, isComplete], props.function);
  }

  /** cdk-nag: what the managed pieces need, said once, with the reason. */
  private acknowledge(provider: cr.Provider, handlers: lambda.Function[], fn: lambda.IFunction) {
    const stack = Stack.of(this);
    const logicalId = (c: { node: { defaultChild?: unknown } }) =>
      c.node.defaultChild ? stack.getLogicalId(c.node.defaultChild as CfnElement) : undefined;
    const arnStar = (id: string | undefined) => `AwsSolutions-IAM5[Resource::<${id}.Arn>:*]`;
    const framework = ['framework-isComplete', 'framework-onTimeout']
      .map((n) => provider.node.tryFindChild(n) as lambda.Function | undefined)
      .filter((f): f is lambda.Function => f !== undefined);
    const basic = {
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
      reason: 'The AWS managed policy for writing the function log: the least a Lambda function needs.',
    };
    for (const h of handlers) Validations.of(h).acknowledge(basic);
    Validations.of(this.stateMachine).acknowledge(
      {
        id: arnStar(logicalId(fn)),
        reason: 'Invoking any version of the db-setup function, and only it (the LambdaInvoke default).',
      },
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'X-Ray trace and log delivery actions, which take no resource (the Step Functions defaults).',
      },
    );
    Validations.of(handlers[1]).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<${logicalId(this.stateMachine)}.Name>:*]`,
      reason: 'DescribeExecution on the executions of this state machine only (their names are generated).',
    });
    const frameworkReason = 'CDK Provider framework: invokes its own handlers (any version), and only them.';
    Validations.of(provider).acknowledge(
      basic,
      ...[...handlers, ...framework].map((h) => ({ id: arnStar(logicalId(h)), reason: frameworkReason })),
      {
      id: 'AwsSolutions-L1',
      reason: 'CDK Provider framework functions: the runtime is chosen by aws-cdk-lib.',
    }, {
      id: 'AwsSolutions-SF1',
      reason: 'CDK Provider framework waiter state machine: its logging is configured by aws-cdk-lib.',
    }, {
      id: 'AwsSolutions-SF2',
      reason: 'CDK Provider framework waiter state machine: X-Ray tracing is configured by aws-cdk-lib.',
      },
    );
  }
}
