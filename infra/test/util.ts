import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { App, type Stack, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { AwsSolutionsChecks } from 'cdk-nag';

/**
 * A stand-in for `make package`: the template does not depend on what the binary does,
 * only on the code being an asset, so the tests need no Rust build.
 */
export const FIXTURE_CODE_DIR = path.join(__dirname, 'fixtures', 'lambda');

/** Fixture code for the function. */
export const fixtureCode = () => lambda.Code.fromAsset(FIXTURE_CODE_DIR);

/** The feature flags of cdk.json, so that the tests synthesize what `cdk synth` does. */
const CDK_CONTEXT = JSON.parse(readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')).context;

/** An app with cdk.json's context and, like bin/app.ts, cdk-nag (AwsSolutions) on synth. */
export function newApp(opts: { nag?: boolean } = {}): App {
  const app = new App({ context: CDK_CONTEXT });
  if (opts.nag ?? true) {
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  }
  return app;
}

/**
 * Renders a template value as a string, to read tokens in assertions: `Fn::Join` is joined,
 * `{Ref: X}` becomes `<X>` and `{Fn::GetAtt: [X, A]}` becomes `<X.A>`.
 */
export function flatten(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  const v = value as Record<string, any>;
  if (v.Ref) return `<${v.Ref}>`;
  if (v['Fn::GetAtt']) return `<${v['Fn::GetAtt'].join('.')}>`;
  if (v['Fn::Join']) return v['Fn::Join'][1].map(flatten).join(v['Fn::Join'][0]);
  throw new Error(`cannot flatten ${JSON.stringify(value)}`);
}

/** An IAM policy statement as it appears in the template. */
export interface Statement {
  Action: string | string[];
  Resource: unknown;
  Effect: string;
  Condition?: Record<string, Record<string, unknown>>;
}

/** All statements of the template's `AWS::IAM::Policy` resources and inline role policies. */
export function allStatements(resources: Record<string, any>): Statement[] {
  const out: Statement[] = [];
  for (const r of Object.values(resources)) {
    if (r.Type === 'AWS::IAM::Policy') out.push(...r.Properties.PolicyDocument.Statement);
    if (r.Type === 'AWS::IAM::Role') {
      for (const p of r.Properties.Policies ?? []) out.push(...p.PolicyDocument.Statement);
    }
  }
  return out;
}

/** A statement's actions as a list. */
export const actions = (s: Statement): string[] => [s.Action].flat();

/** A statement's resources, flattened to strings. */
export const resources = (s: Statement): string[] => [s.Resource].flat().map(flatten);

/**
 * The cdk-nag findings that fail a synthesis of the stack's app, as `rule path` strings
 * (empty when it passes), read from the validation report the failure points to.
 */
export function nagViolations(stack: Stack): string[] {
  try {
    Template.fromStack(stack);
    return [];
  } catch (e) {
    const report = /found in: (\S+)/.exec(String(e))?.[1];
    if (report === undefined) throw e;
    const json = JSON.parse(readFileSync(report, 'utf8'));
    return json.pluginReports.flatMap((p: any) =>
      p.violations.flatMap((v: any) => v.violatingConstructs.map((c: any) => `${v.ruleName} ${c.constructPath}`)),
    );
  }
}

/**
 * cfn-lint's findings on the stack's template (W3005, a redundant DependsOn CDK writes, is
 * ignored as in `npm run test:cfn-lint`): fails when cfn-lint cannot run.
 */
export function cfnLint(stack: Stack): { status: number | null; output: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'cfn-lint-'));
  try {
    const file = path.join(dir, `${stack.stackName}.template.json`);
    writeFileSync(file, JSON.stringify(Template.fromStack(stack).toJSON()));
    const lint = process.env.CFN_LINT ?? path.join(__dirname, '..', '..', '.venv', 'bin', 'cfn-lint');
    const out = spawnSync(lint, ['--ignore-checks', 'W3005', '--', file], { encoding: 'utf8' });
    if (out.error !== undefined) {
      throw new Error(`cfn-lint not runnable at ${lint}: ${out.error.message}`);
    }
    return { status: out.status, output: out.stdout + out.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The egress rules of a security group (by logical id) as `destination protocol:from-to`
 * strings, sorted: the group's inline rules and the `AWS::EC2::SecurityGroupEgress`
 * resources on it. A destination is a CIDR, a prefix list id or a security group.
 */
export function egressRules(resources: Record<string, any>, groupLogicalId: string): string[] {
  const rule = (r: any) =>
    `${r.CidrIp ?? r.CidrIpv6 ?? flatten(r.DestinationPrefixListId ?? r.DestinationSecurityGroupId)} ` +
    `${r.IpProtocol}:${r.FromPort}-${r.ToPort}`;
  const inline = resources[groupLogicalId].Properties.SecurityGroupEgress ?? [];
  const separate = Object.values(resources)
    .filter((r: any) => r.Type === 'AWS::EC2::SecurityGroupEgress')
    .map((r: any) => r.Properties)
    .filter((p: any) => flatten(p.GroupId) === `<${groupLogicalId}.GroupId>`);
  return [...inline, ...separate].map(rule).sort();
}
