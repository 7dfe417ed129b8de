/** The error `p` rejects with; throws if it resolves. For tests that assert an error's class, name and fields. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}
