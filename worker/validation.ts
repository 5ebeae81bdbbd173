/**
 * Validation failures that only the database can detect (a referenced row
 * that does not exist), reported in the same shape as the zod hook's.
 */
import { ApiError, ErrorCode } from "./errors";

/** A 400 naming one field, as if zod itself had rejected it. */
export function invalidField(path: string, message: string): ApiError {
  const issues = [{ path, code: "custom", message }];
  return new ApiError(
    400,
    ErrorCode.validationFailed,
    `Invalid request: ${path}: ${message}`,
    issues,
  );
}
