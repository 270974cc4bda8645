/**
 * The CDK app: one stack, `DbSetupDatabase`.
 *
 * Context (`-c key=value`):
 * - `arch`: `arm64` (default) or `x86_64`; must match the binary `make package` built.
 * - `responseMode`: `direct` (default) or `provider`.
 * - `lambdaAsset`: a directory to use as the function's code instead of the checked
 *   `make package` output (the tests use a fixture; never deploy that).
 *
 * cdk-nag (AwsSolutions) runs on every synth: an unacknowledged finding fails it.
 */
import { App, Validations } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DatabaseStack } from '../lib/database-stack';
import { DEFAULT_PACKAGE_DIR, packagedCode, type ResponseMode } from '../lib/db-setup';

const app = new App();

function choice<T extends string>(key: string, allowed: readonly T[]): T {
  const value = app.node.tryGetContext(key) ?? allowed[0];
  if (!allowed.includes(value)) {
    throw new Error(`-c ${key}=${value}: expected one of ${allowed.join(', ')}`);
  }
  return value;
}

/** The settings from the context, or a one-line error (no stack trace) and exit status 1. */
function settings() {
  try {
    const arch = choice('arch', ['arm64', 'x86_64'] as const);
    const architecture = arch === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    const asset: string | undefined = app.node.tryGetContext('lambdaAsset');
    return {
      architecture,
      code: asset ? lambda.Code.fromAsset(asset) : packagedCode(DEFAULT_PACKAGE_DIR, architecture),
      responseMode: choice<ResponseMode>('responseMode', ['direct', 'provider']),
    };
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    process.exit(1);
  }
}

new DatabaseStack(app, 'DbSetupDatabase', {
  description: 'PostgreSQL 16 (RDS) in isolated subnets, migrated by the db-setup custom resource',
  ...settings(),
});

Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
